/**
 * proto/tc.proto for the client: the generated gRPC client constructor and the message
 * shapes as @grpc/proto-loader hands them over (camelCase, enums as names, 64-bit integers
 * as numbers, proto3 defaults, oneofs named by a virtual field). The server keeps its own
 * copy (src/server/tc/proto.ts): client and server share the .proto file, not code.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const TC_PROTO_PATH = fileURLToPath(new URL('../../../proto/tc.proto', import.meta.url));
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export type WireErrorCode =
  | 'ERROR_CODE_UNSPECIFIED'
  | 'ERROR_CODE_UNKNOWN_XID'
  | 'ERROR_CODE_ILLEGAL_STATUS'
  | 'ERROR_CODE_LOCK_CONFLICT'
  | 'ERROR_CODE_NOT_LEADER'
  | 'ERROR_CODE_TIMEOUT'
  | 'ERROR_CODE_BAD_REQUEST'
  | 'ERROR_CODE_UNAVAILABLE'
  | 'ERROR_CODE_INTERNAL';

export interface WireError {
  code: WireErrorCode;
  message: string;
  retryable: boolean;
  holdingXid?: string;
  rows?: string[];
  leader?: { nodeId: string; host: string; port: number } | null;
  globalStatus?: number;
}

export interface WireResponse {
  resultCode: 'RESULT_CODE_UNSPECIFIED' | 'RESULT_CODE_OK' | 'RESULT_CODE_FAILED';
  error?: WireError | null;
  [field: string]: unknown;
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
  transactionId: string;
  applicationId: string;
  transactionServiceGroup: string;
  name: string;
  timeoutMs: number;
  beginTime: number;
  globalStatus: number;
  internalStatus: number;
  branches: BranchInfoWire[];
  retryAttempts: number;
  nextRetryAt: number;
  retryStopped: boolean;
  live: boolean;
  finishedAt: number;
  resolvedBy: string;
  rmWaits: RmWaitWire[];
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

export interface TcToRmWire {
  message?: 'registered' | 'branchCommit' | 'branchRollback' | 'ping' | 'pong' | 'goAway';
  registered?: {
    resultCode: WireResponse['resultCode'];
    error?: WireError | null;
    heartbeatIntervalMs: number;
    nodeId: string;
  };
  branchCommit?: PhaseTwoRequestWire;
  branchRollback?: PhaseTwoRequestWire;
  ping?: { sentAtMs: number };
  pong?: { sentAtMs: number };
  goAway?: { error?: WireError | null };
}

export type RmToTcWire =
  | {
      register: {
        applicationId: string;
        transactionServiceGroup: string;
        resourceIds: string[];
        clientId: string;
      };
    }
  | { branchResult: { requestId: string; branchStatus: number; error?: WireError | null } }
  | { ping: { sentAtMs: number } }
  | { pong: { sentAtMs: number } };

/** Calls the multiplexed stream carries (the oneof field names of proto Call). */
export type StreamCallKind =
  | 'begin'
  | 'commit'
  | 'rollback'
  | 'getStatus'
  | 'globalReport'
  | 'branchRegister'
  | 'branchReport'
  | 'lockQuery';

export interface CallWire {
  id: number;
  [kind: string]: unknown;
}

export interface ResultWire {
  id: number;
  response?: StreamCallKind | 'invalid';
  [kind: string]: unknown;
}

type UnaryMethod = (
  request: unknown,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: WireResponse) => void,
) => grpc.ClientUnaryCall;

/** The generated client, typed as far as this module uses it. */
export type TcGrpcClient = grpc.Client & {
  Calls(
    options?: grpc.CallOptions,
  ): grpc.ClientDuplexStream<{ calls: CallWire[] }, { results: ResultWire[] }>;
  RmChannel(options?: grpc.CallOptions): grpc.ClientDuplexStream<RmToTcWire, TcToRmWire>;
} & Record<string, UnaryMethod>;

let ctor: grpc.ServiceClientConstructor | null = null;

export function tcClientConstructor(): grpc.ServiceClientConstructor {
  if (ctor) return ctor;
  const def = protoLoader.loadSync(TC_PROTO_PATH, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    concord: { tc: { v1: { TransactionCoordinator: grpc.ServiceClientConstructor } } };
  };
  ctor = pkg.concord.tc.v1.TransactionCoordinator;
  return ctor;
}
