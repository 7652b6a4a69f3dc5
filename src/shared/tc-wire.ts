/**
 * proto/tc.proto as both sides see it: the service loaded once, and the TypeScript shapes of
 * its messages as @grpc/proto-loader hands them over (camelCase fields, enums as their
 * names, 64-bit integers as numbers, proto3 defaults filled in, oneofs named by a virtual
 * field). One description for the client and the server: they share the .proto and this.
 *
 * A decoded message comes from the other side: every field's TYPE is guaranteed by
 * protobuf, every VALUE must still be validated before it is used.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { CODECS } from './tc-codecs.gen.ts';
import { withCodecs } from './wire-codecs.ts';

export const TC_PROTO_PATH = fileURLToPath(new URL('../../proto/tc.proto', import.meta.url));

/** The loader options of both sides. */
export const TC_PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let service: grpc.ServiceClientConstructor | null = null;

/**
 * The generated TransactionCoordinator client constructor (its `.service` is the definition);
 * loaded once.
 */
export function tcServiceConstructor(): grpc.ServiceClientConstructor {
  if (service) return service;
  const def = protoLoader.loadSync(TC_PROTO_PATH, TC_PROTO_LOADER_OPTIONS);
  // The loader gives the methods (paths, streaming, names); their messages are read and
  // written by the precompiled codecs (scripts/gen-codecs.mjs), not by reflection.
  const loaded = def['concord.tc.v1.TransactionCoordinator'] as grpc.ServiceDefinition;
  service = grpc.makeGenericClientConstructor(
    withCodecs(loaded, CODECS),
    'TransactionCoordinator',
  ) as grpc.ServiceClientConstructor;
  return service;
}

// ------------------------------------------------------------------ oneofs

/** What a sender writes for a oneof: exactly one of its fields. */
export type OneOf<Fields> = { [K in keyof Fields]: Pick<Fields, K> }[keyof Fields];
/** What a receiver gets for a oneof: any field may be set; the loader names the set one. */
export type Decoded<Fields, Tag extends string> = Partial<Fields> & {
  [T in Tag]?: keyof Fields;
};

// ------------------------------------------------------------------ answers and errors

export type WireResultCode = 'RESULT_CODE_UNSPECIFIED' | 'RESULT_CODE_OK' | 'RESULT_CODE_FAILED';
export type WireErrorCode =
  | 'ERROR_CODE_UNSPECIFIED'
  | 'ERROR_CODE_UNKNOWN_XID'
  | 'ERROR_CODE_ILLEGAL_STATUS'
  | 'ERROR_CODE_LOCK_CONFLICT'
  | 'ERROR_CODE_NOT_LEADER'
  | 'ERROR_CODE_TIMEOUT'
  | 'ERROR_CODE_BAD_REQUEST'
  | 'ERROR_CODE_UNAVAILABLE'
  | 'ERROR_CODE_INTERNAL'
  | 'ERROR_CODE_CAPACITY'
  | 'ERROR_CODE_PERMISSION_DENIED';

export interface WireLeader {
  nodeId: string;
  host: string;
  port: number;
}

export interface WireError {
  code: WireErrorCode;
  message: string;
  retryable: boolean;
  holdingXid?: string;
  rows?: string[];
  leader?: WireLeader | null;
  globalStatus?: number;
}

export interface WireResponse {
  resultCode: WireResultCode;
  error?: WireError | null;
}

// ------------------------------------------------------------------ TM, RM, operator calls

export interface BeginRequestWire {
  name: string;
  timeoutMs: number;
  applicationId: string;
  transactionServiceGroup: string;
  requestId: string;
}
export interface BeginResponseWire extends WireResponse {
  xid?: string;
}
export interface XidRequestWire {
  xid: string;
}
export interface GlobalStatusResponseWire extends WireResponse {
  globalStatus?: number;
}
export interface GlobalReportRequestWire {
  xid: string;
  globalStatus: number;
}
export interface BranchRegisterRequestWire {
  xid: string;
  branchType: number;
  resourceId: string;
  lockKey: string;
  applicationData: string;
  requestId: string;
  clientId: string;
  applicationId: string;
}
export interface BranchRegisterResponseWire extends WireResponse {
  branchId?: string;
}
export interface BranchReportRequestWire {
  xid: string;
  branchId: string;
  branchStatus: number;
  applicationData?: string;
  /** Set by the loader when the optional field is present. */
  _applicationData?: 'applicationData';
}
export interface LockQueryRequestWire {
  xid: string;
  resourceId: string;
  lockKey: string;
}
export interface LockQueryResponseWire extends WireResponse {
  lockable?: boolean;
}
export interface ResumeRetryRequestWire {
  xid: string;
  /** Absent or false: refused past the retry horizon. */
  force?: boolean;
}
export interface MarkResolvedRequestWire {
  xid: string;
  confirmXid: string;
  operator: string;
}
export interface BranchInfoWire {
  branchId: string;
  branchType: number;
  resourceId: string;
  lockKey: string;
  applicationData: string;
  branchStatus: number;
  clientId: string;
  lockedRows: number;
  applicationId: string;
}
export interface RmWaitWire {
  branchId: string;
  applicationId: string;
  resourceId: string;
  since: number;
}
export interface SessionInfoWire {
  xid: string;
  transactionId?: string;
  applicationId?: string;
  transactionServiceGroup?: string;
  name?: string;
  timeoutMs?: number;
  beginTime?: number;
  globalStatus: number;
  internalStatus?: number;
  branches?: BranchInfoWire[];
  retryAttempts?: number;
  nextRetryAt?: number;
  retryStopped?: boolean;
  live: boolean;
  finishedAt?: number;
  resolvedBy?: string;
  rmWaits?: RmWaitWire[];
  stuck?: boolean;
}
export interface SessionResponseWire extends WireResponse {
  session?: SessionInfoWire | null;
}
export interface ListSessionsRequestWire {
  pageSize: number;
  pageToken: string;
  globalStatus: number;
  /** Absent or false: every session. */
  stuck?: boolean;
}
export interface ListSessionsResponseWire extends WireResponse {
  sessions?: SessionInfoWire[];
  nextPageToken?: string;
  totalLive?: number;
}

/** Any call's answer, as a client reads it: the fields of every response, each optional. */
export type AnyResponseWire = WireResponse &
  Partial<
    Omit<BeginResponseWire, keyof WireResponse> &
      Omit<GlobalStatusResponseWire, keyof WireResponse> &
      Omit<BranchRegisterResponseWire, keyof WireResponse> &
      Omit<LockQueryResponseWire, keyof WireResponse> &
      Omit<SessionResponseWire, keyof WireResponse> &
      Omit<ListSessionsResponseWire, keyof WireResponse>
  >;

// ------------------------------------------------------------------ the RM channel

export interface RmRegisterWire {
  applicationId: string;
  transactionServiceGroup: string;
  resourceIds: string[];
  clientId: string;
  /** The RM reads phase-two batches (proto RmRegister.batches); false from an older SDK. */
  batches?: boolean;
}
export interface RmRegisteredWire extends WireResponse {
  heartbeatIntervalMs: number;
  nodeId: string;
  /** The TC reads result batches (proto RmRegistered.batches); false from an older TC. */
  batches?: boolean;
}
export interface PhaseTwoRequestWire {
  requestId: string;
  xid: string;
  branchId: string;
  branchType: number;
  resourceId: string;
  applicationData: string;
  applicationId: string;
}
export interface BranchResultWire {
  requestId: string;
  branchStatus: number;
  error?: WireError | null;
  /** The RM's explanation of a failed status, ≤ MAX_RM_MESSAGE_BYTES ('' or absent: none). */
  message?: string;
}

/** Phase-two requests for one RM in one message (proto PhaseTwoBatch). */
export interface PhaseTwoBatchWire {
  commits: PhaseTwoRequestWire[];
  rollbacks: PhaseTwoRequestWire[];
}
/** Results in one message (proto BranchResultBatch). */
export interface BranchResultBatchWire {
  results: BranchResultWire[];
}

/** The most of an RM's phase-two message the wire carries, bytes (UTF-8). */
export const MAX_RM_MESSAGE_BYTES = 2048;

/** `text` cut to at most MAX_RM_MESSAGE_BYTES bytes of UTF-8, on a character boundary. */
export function boundRmMessage(text: string): string {
  if (Buffer.byteLength(text) <= MAX_RM_MESSAGE_BYTES) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > MAX_RM_MESSAGE_BYTES - 3) break;
    out += ch;
    bytes += n;
  }
  return `${out}…`;
}
export interface PingWire {
  sentAtMs: number;
}
export interface GoAwayWire {
  error?: WireError | null;
}

/** The fields of the RmToTc oneof `message`. */
export interface RmToTcFields {
  register: RmRegisterWire;
  branchResult: BranchResultWire;
  ping: PingWire;
  pong: PingWire;
  branchResults: BranchResultBatchWire;
}
/** The fields of the TcToRm oneof `message`. */
export interface TcToRmFields {
  registered: RmRegisteredWire;
  branchCommit: PhaseTwoRequestWire;
  branchRollback: PhaseTwoRequestWire;
  ping: PingWire;
  pong: PingWire;
  goAway: GoAwayWire;
  phaseTwoBatch: PhaseTwoBatchWire;
}

// ------------------------------------------------------------------ the multiplexed calls

/** The requests the `Calls` stream carries (the oneof `request` of proto Call). */
export interface CallRequests {
  begin: BeginRequestWire;
  commit: XidRequestWire;
  rollback: XidRequestWire;
  getStatus: XidRequestWire;
  globalReport: GlobalReportRequestWire;
  branchRegister: BranchRegisterRequestWire;
  branchReport: BranchReportRequestWire;
  lockQuery: LockQueryRequestWire;
}
export type CallKind = keyof CallRequests;

export type CallWire = { id: number } & Decoded<CallRequests, 'request'>;
export interface CallBatchWire {
  calls: CallWire[];
}
export type ResultWire = { id: number } & Decoded<
  Record<CallKind | 'invalid', WireResponse>,
  'response'
>;
export interface ResultBatchWire {
  results: ResultWire[];
}
