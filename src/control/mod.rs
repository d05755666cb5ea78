//! Dispatcher host services shared by ced and ctrl-exec-api.
