/**
 * The HTTP side's read-only token: checked in constant time from an
 * `Authorization: Bearer` header or from the sign-in cookie, which holds a
 * digest of the token rather than the token itself.
 *
 * @module
 */

/** The cookie the sign-in form sets. */
export const COOKIE = "seaport_session";
const encoder = new TextEncoder();

async function digest(context: string, value: string): Promise<Uint8Array> {
  const bytes = encoder.encode(`seaport-http-${context}-v1:${value}`);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** Compares two digests of equal length without stopping early. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Checks presented tokens and cookies against one token. */
export class TokenCheck {
  #token: Promise<Uint8Array>;
  #cookie: Promise<string>;

  constructor(token: string) {
    this.#token = digest("token", token);
    this.#cookie = digest("cookie", token).then(hex);
  }

  /** Whether `presented` is the token (compared as digests, in constant time). */
  async token(presented: string): Promise<boolean> {
    return same(await digest("token", presented), await this.#token);
  }

  /** The cookie value a signed-in browser carries. */
  cookieValue(): Promise<string> {
    return this.#cookie;
  }

  /** Whether the request carries the right Bearer token or cookie. */
  async request(req: Request): Promise<boolean> {
    const auth = req.headers.get("authorization");
    if (auth !== null) {
      const m = /^Bearer +(\S+) *$/i.exec(auth);
      return m !== null && await this.token(m[1]!);
    }
    const value = cookieOf(req, COOKIE);
    if (value === undefined) return false;
    return same(encoder.encode(value), encoder.encode(await this.#cookie));
  }
}

/** The value of cookie `name`, if the request has one. */
export function cookieOf(req: Request, name: string): string | undefined {
  const header = req.headers.get("cookie");
  if (header === null) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
