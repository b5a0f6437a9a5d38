// The coordinator's receipt for a committed statistic, defined once: the coordinator signs these fields, the
// agent rebuilds them from the wire message and verifies the signature (Ed25519 over canonical JSON).

/** What a receipt says: this owner's statistic with this digest and size was committed to this job then. */
export interface ReceiptFields {
  readonly jobId: string;
  readonly owner: string;
  readonly statisticId: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly committedAt: string;
}

export interface Receipt extends ReceiptFields {
  /** The coordinator's signature over the fields (shared/security signFields). */
  readonly signature: string;
}

/** The signed fields of a receipt however it arrived (the wire message carries bytes as a bigint). */
export function receiptFields(r: {
  readonly jobId: string;
  readonly owner: string;
  readonly statisticId: string;
  readonly sha256: string;
  readonly bytes: number | bigint;
  readonly committedAt: string;
}): ReceiptFields {
  return {
    jobId: r.jobId,
    owner: r.owner,
    statisticId: r.statisticId,
    sha256: r.sha256,
    bytes: Number(r.bytes),
    committedAt: r.committedAt,
  };
}
