/**
 * shared/secure-aggregation/ (DESIGN §8): the primitives of SecAgg+ for Gram sums — Z/2⁶⁴ vectors (BigUint64Array), the fixed-point
 * codec with its overflow bound, AES-256-CTR masks, X25519 agreements with signed advertisements, end-to-end sealed
 * shares, Shamir t-of-n over GF(2⁸), the never-both-shares guard, and the rounds' messages, masking and unmasking
 * (protocol.ts) that the agent and the coordinator run (issue #18).
 */
export { applyMask } from './prg.js';
export { boundLog2Of, decodeFixedPoint, encodeFixedPoint, type FixedPointScale, fixedPointScale } from './fixed-point.js';
export {
  type AgreementKeys,
  agreedSecret,
  generateAgreementKeys,
  type KeyAdvertisement,
  openShare,
  sealShare,
  seedCommitment,
  signAdvertisement,
  signUnmaskRequest,
  type UnmaskRequest,
  verifyAdvertisement,
  verifyUnmaskRequest,
} from './keys.js';
export { ringAddInto, ringAddIntoLanes, ringSubInto, ringVector } from './ring.js';
export { combineShares, reconstructChecked, type Share, splitSecret } from './shamir.js';
export { type ShareKind, ShareGuard } from './guard.js';
export {
  AdvertiseBody,
  ApprovedTerms,
  checkRoundScale,
  checkUnmaskRequest,
  checkConfirmations,
  ConfirmBody,
  distinctNames,
  keySetOf,
  maskLabel,
  maskSlice,
  MIN_BOUND_LOG2,
  pairSign,
  parseSecure,
  type PeerRules,
  RevealBody,
  RoundView,
  SecurePhase,
  ShareBody,
  SharePayload,
  signedRoundScale,
  statisticScale,
  survivorsNeeded,
  unmaskSlice,
  verifyPeerCertificate,
} from './protocol.js';
