# syntax=docker/dockerfile:1
# Concord's server image: the `concord` package (server and CLI) compiled to JavaScript and
# run by plain node, as the unprivileged `node` user, with the Raft data on a volume.
#
#   docker build -t concord .
#   docker run -d -p 7091:7091 -p 8091:8091 -v concord-data:/data concord   # one node
#   docker compose up -d                                                   # three: compose.yaml
#
# docs/operations.md ("Container image") explains the volume, ports, config and health check.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: every dependency and tsc; compiles src/ to dist/ (the server's build only).
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY packages/client/package.json packages/client/
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/ scripts/
COPY proto/ proto/
COPY src/ src/
RUN node scripts/build.mjs server

# ---- deps: the server's production dependencies, from the lockfile. Install scripts are
# not needed: LevelDB and msgpackr load prebuilt binaries shipped in their packages.
FROM ${NODE_IMAGE} AS deps
WORKDIR /opt/concord
COPY package.json package-lock.json ./
COPY packages/client/package.json packages/client/
RUN npm ci --omit=dev --ignore-scripts --workspaces=false --no-audit --no-fund

# ---- runtime: node, the compiled server, its production dependencies; nothing else.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    CONCORD_HEALTH_PORT=7091
WORKDIR /opt/concord
COPY --from=deps /opt/concord/node_modules/ node_modules/
COPY --from=build /src/dist/ dist/
COPY package.json ./
COPY bin/ bin/
COPY proto/ proto/
COPY docker/standalone.yaml /etc/concord/node.yaml
RUN ln -s /opt/concord/bin/concord.js /usr/local/bin/concord \
    && mkdir -p /data /pki \
    && chown node:node /data /pki
USER node
VOLUME ["/data", "/pki"]
# 7091 HTTP openapi (metadata, watch, health, metrics), 8091 TC gRPC (clients), 9091 Raft peers
EXPOSE 7091 8091 9091
# Liveness: GET /health answers 200 while the process serves HTTP (readiness is GET /ready).
# HTTPS (a secure node, the default), else plain HTTP (insecure mode). The certificate is not
# checked: this asks the container's own loopback for a status code, nothing secret.
# CONCORD_HEALTH_PORT: set it when a config moves server.httpPort.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const get = (m) => new Promise((ok, no) => m.get({ host: '127.0.0.1', port: process.env.CONCORD_HEALTH_PORT, path: '/health', rejectUnauthorized: false, timeout: 2000 }, (r) => { r.resume(); ok(r.statusCode); }).on('error', no).on('timeout', function () { this.destroy(new Error('timeout')); })); get(require('node:https')).catch(() => get(require('node:http'))).then((s) => process.exit(s === 200 ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["concord"]
CMD ["start", "--config", "/etc/concord/node.yaml"]
