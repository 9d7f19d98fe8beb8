/**
 * The shared-secret challenge–response, through WebCrypto: the server sends a
 * random nonce, the client answers with HMAC-SHA-256(secret, context + nonce)
 * in hex, and the server checks it with `crypto.subtle.verify`, which compares
 * in constant time. The secret itself never crosses the wire.
 *
 * @module
 */

const CONTEXT = "seaport-auth-v1:";

/** An imported secret (WebCrypto's `CryptoKey`, named without the global). */
export type SecretKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const encoder = new TextEncoder();

/** Imports a secret as an HMAC-SHA-256 key. */
export function importSecret(secret: string): Promise<SecretKey> {
  return crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** A fresh random challenge, as hex. */
export function newNonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

/** The client's answer to a challenge, as hex. */
export async function answer(key: SecretKey, nonce: string): Promise<string> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    key,
    encoder.encode(CONTEXT + nonce),
  );
  return toHex(new Uint8Array(mac));
}

/** Checks an answer in constant time; a malformed answer is simply wrong. */
export async function verify(
  key: SecretKey,
  nonce: string,
  mac: string,
): Promise<boolean> {
  const bytes = fromHex(mac);
  if (bytes === undefined || bytes.length !== 32) return false;
  return await crypto.subtle.verify(
    "HMAC",
    key,
    bytes,
    encoder.encode(CONTEXT + nonce),
  );
}

function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> | undefined {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(hex)) return undefined;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}
