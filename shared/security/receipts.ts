import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';

/** Canonical JSON: keys sorted at every level, no whitespace; any tool can re-create the bytes. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export interface SigningKeys {
  readonly privateKeyPem: string;
  readonly publicKeyPem: string;
}

export function generateSigningKeys(): SigningKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

// Parsing a PEM costs ≈ 1.5 ms (more than the Ed25519 signature itself), and one key signs every receipt and ledger
// record of a process: parsed keys are kept, a few at a time, by their PEM text.
const PARSED_KEYS_KEPT = 32;
const parsedKeys = new Map<string, KeyObject>();
function parsedKey(pem: string, parse: (pem: string) => KeyObject): KeyObject {
  let key = parsedKeys.get(pem);
  if (key === undefined) {
    key = parse(pem);
    if (parsedKeys.size >= PARSED_KEYS_KEPT) parsedKeys.delete(parsedKeys.keys().next().value!);
    parsedKeys.set(pem, key);
  }
  return key;
}

/** Ed25519 signature (base64) of the canonical JSON of `fields`. */
export function signFields(fields: Record<string, unknown>, privateKeyPem: string): string {
  return sign(null, Buffer.from(canonicalJson(fields)), parsedKey(privateKeyPem, createPrivateKey)).toString('base64');
}

export function verifyFields(fields: Record<string, unknown>, signature: string, publicKeyPem: string): boolean {
  try {
    return verify(null, Buffer.from(canonicalJson(fields)), parsedKey(publicKeyPem, createPublicKey), Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
