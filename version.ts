/**
 * The version of seaport, for `seaport --version`. Kept equal to `version` in
 * deno.json; a test checks that they match.
 *
 * @module
 */

/** The version of this seaport release, as in deno.json. */
export const VERSION = "0.1.0";
