// Prisma CLI configuration for the default plan's Prisma project (the demo app's schema).
//
// migration-soak runs `prisma migrate status` here to cross-check its own ledger
// (plugins/migration_soak/prisma_cli.py, tests/integration/test_prisma_cli.py). It uses
// the JavaScript schema engine with the node-postgres driver adapter, so the CLI runs
// offline: no Rust engine binary is downloaded (the machines reach only the npm registry).
// Run it with PRISMA_CLI_QUERY_ENGINE_TYPE=client. `migrate status` and `migrate resolve`
// work this way in prisma 6.19; `migrate deploy` does not yet (prisma/orm#27403).
//
// DATABASE_URL comes from the environment of the process (never from argv or a file).
import path from "node:path";
import { PrismaPg } from "@prisma/adapter-pg";
import { defineConfig } from "prisma/config";

export default defineConfig({
  experimental: {
    adapter: true,
  },
  engine: "js",
  schema: path.join(__dirname, "schema.prisma"),
  migrations: {
    path: path.join(__dirname, "migrations"),
  },
  async adapter() {
    const connectionString = process.env.DATABASE_URL;
    if (!connectionString) {
      throw new Error("DATABASE_URL is not set");
    }
    // allowExitOnIdle: without it the pool's idle connection keeps node alive for
    // idleTimeoutMillis (10 s) after a command that ends without process.exit().
    return new PrismaPg({ connectionString, allowExitOnIdle: true });
  },
});
