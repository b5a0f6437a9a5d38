// Round 0's keys (SecAgg+, Bell et al. 2020): each owner makes two X25519 key pairs, one whose agreements seed the
// pairwise masks and one whose agreements key the end-to-end encryption of the secret shares it sends. It
// advertises both public keys signed with its certificate's own key, so a coordinator relaying them cannot put its
// own keys in their place: every other owner checks the signature against the certificate, and the certificate's
// name against the owner the advertisement claims to be.
import {
  createCipheriv,
  createHash,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign,
  verify,
  X509Certificate,
} from 'node:crypto';

import { ErrorCode, GramfuseError } from '../errors.js';
import { canonicalJson, certificateName } from '../security/index.js';

export interface AgreementKeys {
  /** SPKI PEM */
  readonly publicKeyPem: string;
  /** PKCS#8 PEM: never leaves its owner except as Shamir shares of the mask key (for dropout recovery). */
  readonly privateKeyPem: string;
}

export function generateAgreementKeys(): AgreementKeys {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/**
 * The 32-byte secret two owners share: HKDF-SHA256 of their X25519 agreement, bound to the job and to what it is for
 * ('mask' or 'share-encryption'). Either side computes the same bytes from its private key and the other's public one.
 */
export function agreedSecret(privateKeyPem: string, peerPublicKeyPem: string, job: string, use: 'mask' | 'share-encryption'): Uint8Array {
  const shared = diffieHellman({ privateKey: createPrivateKey(privateKeyPem), publicKey: createPublicKey(peerPublicKeyPem) });
  return new Uint8Array(hkdfSync('sha256', shared, Buffer.from(job, 'utf8'), `gramfuse secagg ${use}`, 32));
}

/** What an owner advertises in round 0. */
export interface KeyAdvertisement {
  readonly job: string;
  readonly owner: string;
  readonly maskPublicKey: string;
  readonly encryptionPublicKey: string;
  /** H(bᵢ): the commitment to the owner's self-mask seed (seedCommitment), so a seed rebuilt from shares can be checked. */
  readonly selfSeedCommitment: string;
  /**
   * Per statistic, b with max |value| ≤ 2^b: signed, so every agent computes the round's common scale from the same
   * bounds itself instead of taking the coordinator's (which could give each owner another scale).
   */
  readonly bounds: Readonly<Record<string, number>>;
  /** base64 signature over the canonical JSON of the fields above, by the owner's certificate key. */
  readonly signature: string;
}

const advertised = (a: Omit<KeyAdvertisement, 'signature'>): Buffer =>
  Buffer.from(
    canonicalJson({
      job: a.job,
      owner: a.owner,
      maskPublicKey: a.maskPublicKey,
      encryptionPublicKey: a.encryptionPublicKey,
      selfSeedCommitment: a.selfSeedCommitment,
      bounds: a.bounds,
    }),
  );

/**
 * H(bᵢ) as advertised: SHA-256 over a domain label, the job, the owner and the seed (hex). A seed reconstructed from
 * revealed shares that does not hash to the advertised commitment came from a wrong share, and is never used.
 */
export function seedCommitment(job: string, owner: string, seed: Uint8Array): string {
  return createHash('sha256').update(`gramfuse secagg self-seed\u0000${job}\u0000${owner}\u0000`, 'utf8').update(seed).digest('hex');
}

/** Signs the advertisement with the owner's certificate private key (ECDSA P-256 / SHA-256, or Ed25519). */
export function signAdvertisement(fields: Omit<KeyAdvertisement, 'signature'>, certificateKeyPem: string): KeyAdvertisement {
  const key = createPrivateKey(certificateKeyPem);
  const signature = sign(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', advertised(fields), key).toString('base64');
  return { ...fields, signature };
}

/**
 * Checks an advertisement against the claimed owner's certificate (which the caller has verified against the
 * federation CA): its name must be the owner's, and the signature its key's. Otherwise SECURE_AGGREGATION: the
 * keys were not made by that owner, and nothing is derived from them.
 */
export function verifyAdvertisement(ad: KeyAdvertisement, certificatePem: string): void {
  const name = certificateName(certificatePem);
  const refuse = (why: string): never => {
    throw new GramfuseError(ErrorCode.SecureAggregation, `job ${ad.job}: the keys advertised for ${ad.owner} are refused: ${why}`, {
      facts: { job: ad.job, owner: ad.owner },
    });
  };
  if (name !== ad.owner) refuse(`they are signed for certificate ${name}, not ${ad.owner}'s`);
  const key = new X509Certificate(certificatePem).publicKey;
  let ok = false;
  try {
    ok = verify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', advertised(ad), key, Buffer.from(ad.signature, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) refuse(`the signature does not verify with ${ad.owner}'s certificate (substituted or changed in transit)`);
}

/**
 * End-to-end encryption of a share from one owner to another (the coordinator relays only this): AES-256-GCM under
 * their share-encryption secret, the sender, recipient and job bound as associated data.
 */
export function sealShare(secret: Uint8Array, plaintext: Uint8Array, aad: string): Uint8Array {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', secret, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return new Uint8Array(Buffer.concat([iv, cipher.getAuthTag(), body]));
}

export function openShare(secret: Uint8Array, sealed: Uint8Array, aad: string): Uint8Array {
  const data = Buffer.from(sealed);
  if (data.byteLength < 28) throw new GramfuseError(ErrorCode.SecureAggregation, `a sealed share of ${data.byteLength} bytes is too short`);
  const decipher = createDecipheriv('aes-256-gcm', secret, data.subarray(0, 12));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(data.subarray(12, 28));
  try {
    return new Uint8Array(Buffer.concat([decipher.update(data.subarray(28)), decipher.final()]));
  } catch {
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `a sealed share does not open (${aad}): changed in transit, or not sealed for this owner`,
    );
  }
}

/**
 * The unmasking request as an owner signs it in the consistency round: the job, the survivors and the dropped, sorted,
 * and the key set digest the owner shared and masked with (its members, keys and signed bounds, hence the scale), so the
 * t signatures attest one transcript, not only one request.
 */
const requestBytes = (job: string, request: UnmaskRequest): Buffer =>
  Buffer.from(
    canonicalJson({
      job,
      kind: 'gramfuse secagg unmasking request',
      survivors: [...request.survivors].sort(),
      dropped: [...request.dropped].sort(),
      ...(request.keySet === undefined ? {} : { keySet: request.keySet }),
    }),
  );

/** What a confirmation signs: whose shares are asked for and, from the agents, the round's key set digest. */
export interface UnmaskRequest {
  readonly survivors: readonly string[];
  readonly dropped: readonly string[];
  /** keySetOf the round's advertisements, as the signer checked them. */
  readonly keySet?: string;
}

/**
 * The consistency round (SecAgg+): an owner signs the unmasking request it was shown with its certificate key, so every
 * other owner can check that at least t owners were shown the same one before revealing anything.
 */
export function signUnmaskRequest(job: string, request: UnmaskRequest, certificateKeyPem: string): string {
  const key = createPrivateKey(certificateKeyPem);
  return sign(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', requestBytes(job, request), key).toString('base64');
}

/** Whether `signature` is `certificatePem`'s key's signature over this unmasking request. */
export function verifyUnmaskRequest(job: string, request: UnmaskRequest, signature: string, certificatePem: string): boolean {
  try {
    const key = new X509Certificate(certificatePem).publicKey;
    return verify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', requestBytes(job, request), key, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
