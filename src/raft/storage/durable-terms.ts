/**
 * What both log storages (LevelDbStorage, WalStorage) keep in memory of their durable log:
 * the snapshot's index and term and the term of every entry after it — no entry data
 * (issue 19). One definition of reading it.
 */
export interface DurableTerms {
  snapshotIndex: number;
  snapshotTerm: number;
  /** Terms of the durable entries snapshotIndex+1 .. snapshotIndex+terms.length. */
  terms: number[];
}

/** The last durable index (the snapshot's when no entry follows it). */
export function lastDurableIndex(v: DurableTerms): number {
  return v.snapshotIndex + v.terms.length;
}

/** The term of a durable entry (or of the snapshot's last entry); null if not held. */
export function durableTermAt(v: DurableTerms, index: number): number | null {
  if (index === v.snapshotIndex) return v.snapshotTerm;
  if (index < v.snapshotIndex || index > lastDurableIndex(v)) return null;
  return v.terms[index - v.snapshotIndex - 1] ?? null;
}

/** The index range a storage's stats report (zeros before load). */
export function durableRange(v: DurableTerms | null): {
  snapshotIndex: number;
  firstIndex: number;
  lastIndex: number;
} {
  return {
    snapshotIndex: v?.snapshotIndex ?? 0,
    firstIndex: (v?.snapshotIndex ?? 0) + 1,
    lastIndex: v ? lastDurableIndex(v) : 0,
  };
}
