# privdns container image: a build stage compiles privdns's TypeScript (src/ only, no tests)
# and better-sqlite3's native module; the runtime stage carries only production dependencies
# and runs as a non-root user.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Only what ships: npm ci's install step builds the batched UDP addon (native/, with the
# compilers above), its prepare step compiles src/ alone (tsconfig.json) into dist/src.
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY scripts/build-native.mjs ./scripts/
COPY native ./native
COPY src ./src
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep /usr/local/bin/node \
    && apt-get purge -y libcap2-bin && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/native/build/Release/batch_udp.node ./native/build/Release/batch_udp.node
COPY package.json ./
COPY config ./config
ENV NODE_ENV=production \
    PRIVDNS_DNS_LISTEN=0.0.0.0:53 \
    PRIVDNS_ADMIN_LISTEN=0.0.0.0:8053 \
    PRIVDNS_DATA_DIR=/var/lib/privdns
RUN mkdir -p /var/lib/privdns && chown node:node /var/lib/privdns
VOLUME ["/var/lib/privdns"]
USER node
EXPOSE 53/udp 53/tcp 8053
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:8053/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/src/main.js"]
CMD ["serve"]
