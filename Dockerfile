# syntax=docker/dockerfile:1
#
# AutoCode WebSocket gateway.
#
# Base image: node:20-bookworm-slim (Debian 12, glibc 2.36). Keep the Debian/glibc family: the
# uWebSockets.js build we depend on (@trufflesuite/uws-js-unofficial) ships prebuilt native
# binaries for glibc, not musl (no Alpine), and was validated on exactly this family.
#
#   docker build -t autocode-ws-gateway .
#   docker run --rm -p 8080:8080 -e JWT_SECRET=... -e REDIS_URL=redis://redis:6379 autocode-ws-gateway
#
# One container uses every CPU it may run on: WORKERS defaults to os.availableParallelism(), which
# follows the container's cpuset (docker run --cpuset-cpus) but not a CFS quota (--cpus): with
# --cpus=2 on a larger host, set -e WORKERS=2 as well.
#
# No Docker engine ran where this file was last changed: it is kept valid by review.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript to dist/ ----------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# package.json's `prepare` skips itself here (src/ is not copied yet); the build runs below.
RUN npm ci --no-audit --no-fund
COPY tsconfig*.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies + dist/ only -------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# glibc malloc as `npm start` sets it: uWS's send buffers of slow clients are native allocations;
# with these, their memory goes back to the system once those clients are gone (bench/results/
# flood-report.md: RSS a minute after a flood 1.21x baseline, against 6.2x with glibc's defaults).
ENV MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=32768 \
    MALLOC_TRIM_THRESHOLD_=131072
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only (no TypeScript, so `prepare` skips itself).
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The live project page served at / (static files, no build step).
COPY public ./public

# The official image provides the unprivileged `node` user (uid 1000).
USER node

EXPOSE 8080

# /healthz answers 200 while the process serves (use /readyz for "Redis connected" in the orchestrator).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]

# The gateway drains on SIGTERM (every worker closes its clients with 1001, then the process exits).
# Node runs as PID 1 here and handles SIGTERM itself; give the container a stop timeout longer than
# the drain (docker stop -t).
STOPSIGNAL SIGTERM
# A 4 MB young generation, as `npm start`: halves the RSS an idle connection costs (README, Operations).
CMD ["node", "--max-semi-space-size=4", "dist/main.js"]
