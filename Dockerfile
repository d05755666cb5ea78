# ctrl-exec in a container: the static musl binary alone, on scratch, as a
# non-root user. One image serves every role; the command picks it:
#   docker run ... ctrl-exec ced ...        dispatcher CLI
#   docker run ... ctrl-exec ctrl-exec-api  API server
#   docker run ... ctrl-exec cea serve      agent
# Build the binary first: make static (docs/DOCKER.md).
FROM scratch
COPY target/x86_64-unknown-linux-musl/release/ctrl-exec /usr/bin/ctrl-exec
# The agent's scripts run without a shell unless the image has one; mount
# your scripts (and, if they need it, a static busybox) under /opt.
USER 10001:10001
VOLUME ["/etc/ctrl-exec", "/var/lib/ctrl-exec", "/etc/ctrl-exec-agent", "/var/lib/ctrl-exec-agent"]
EXPOSE 7443 7444 7445
ENTRYPOINT ["/usr/bin/ctrl-exec"]
CMD ["--version"]
