/**
 * The seaport client; its parts live in `client/` (see `client/mod.ts`).
 *
 * @module
 */
export * from "./client/mod.ts";
