/**
 * The action context: what a TCC try or a Saga action was called with, carried to its
 * confirm / cancel / compensate. It travels as the branch's applicationData (JSON), kept by
 * the TC with the branch and sent back in every phase-two request — so phase two works in
 * another process, after a restart, on another replica of the service. That is why the
 * arguments must survive JSON: phase two sees them as JSON.parse(JSON.stringify(args)).
 */
import { BadRequestError } from '../../shared/errors.ts';
import { UnretryableBranchError } from './errors.ts';
import { MAX_APPLICATION_DATA_BYTES } from './limits.ts';

/** Format marker and version of the applicationData the SDK writes. */
const FORMAT_KEY = 'concord';
const FORMAT_VERSION = 1;

interface Envelope {
  [FORMAT_KEY]: typeof FORMAT_VERSION;
  args?: unknown;
}

/** Serializes an action's arguments; BadRequestError when they are not JSON or too large. */
export function encodeActionContext(resourceId: string, args: unknown): string {
  const envelope: Envelope = { [FORMAT_KEY]: FORMAT_VERSION };
  if (args !== undefined) envelope.args = args;
  let data: string;
  try {
    data = JSON.stringify(envelope);
  } catch (err) {
    throw new BadRequestError(
      `the arguments of ${resourceId} must be JSON-serializable (they are kept by the TC for phase two): ${(err as Error).message}`,
      { cause: err },
    );
  }
  const bytes = Buffer.byteLength(data, 'utf8');
  if (bytes > MAX_APPLICATION_DATA_BYTES) {
    throw new BadRequestError(
      `the arguments of ${resourceId} serialize to ${bytes} bytes, more than the limit of ${MAX_APPLICATION_DATA_BYTES}: pass ids, not documents`,
    );
  }
  return data;
}

/**
 * The arguments back from applicationData. A branch whose data is not ours cannot be
 * phase-two'd by any retry: UnretryableBranchError (the transaction waits for an operator).
 */
export function decodeActionContext(resourceId: string, data: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch (err) {
    throw new UnretryableBranchError(`applicationData of a ${resourceId} branch is not JSON`, {
      cause: err,
    });
  }
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    (parsed as Record<string, unknown>)[FORMAT_KEY] !== FORMAT_VERSION
  ) {
    throw new UnretryableBranchError(
      `applicationData of a ${resourceId} branch is not a Concord action context (version ${FORMAT_VERSION})`,
    );
  }
  return (parsed as Envelope).args;
}
