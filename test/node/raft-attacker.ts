/**
 * A stranger on the network, for the peer-security tests: it opens the Raft stream of a
 * node with whatever credentials it has (none, a certificate of another CA, a stolen
 * member certificate) and writes forged frames. It speaks the real wire format
 * (proto/raft.proto, codec.ts), so whatever the node refuses, it refuses on the merits.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Message } from '../../src/raft/core/types.ts';
import { encodeMessage } from '../../src/raft/transport/codec.ts';
import { raftTransportClient } from '../../src/raft/transport/grpc-transport.ts';
import type { TlsFiles } from '../support/pki.ts';

export interface ForgedFrame {
  from: string;
  to: string;
  messages: Message[];
  clusterId: string;
  fromUid: string;
}

/** How the attacker connects: plaintext, TLS without a client certificate, or with one. */
export type AttackerCredentials =
  | { kind: 'plaintext' }
  | { kind: 'tlsNoCert'; trustCa: string }
  | { kind: 'tlsCert'; trustCa: string; files: TlsFiles };

export interface AttackResult {
  /** The stream's outcome: null if the node took the frames and answered OK. */
  code: grpc.status | null;
  details: string;
}

type RaftClient = grpc.Client & {
  Stream(cb: (err: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown>;
};

function credentials(c: AttackerCredentials): grpc.ChannelCredentials {
  if (c.kind === 'plaintext') return grpc.credentials.createInsecure();
  const ca = readFileSync(c.trustCa);
  // The attacker does not care who answers: it skips the server's identity check.
  const skip = { checkServerIdentity: () => undefined };
  if (c.kind === 'tlsNoCert') return grpc.credentials.createSsl(ca, null, null, skip);
  return grpc.credentials.createSsl(
    ca,
    readFileSync(c.files.key),
    readFileSync(c.files.cert),
    skip,
  );
}

/** Sends the frames on one stream, ends it and reports how the node answered. */
export function attack(
  address: string,
  creds: AttackerCredentials,
  frames: ForgedFrame[],
  timeoutMs = 5_000,
): Promise<AttackResult> {
  const RaftTransport = raftTransportClient();
  const client = new RaftTransport(address, credentials(creds), {
    'grpc.use_local_subchannel_pool': 1,
    'grpc.ssl_target_name_override': 'concord-node',
  }) as unknown as RaftClient;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      call.cancel();
    }, timeoutMs);
    const call = client.Stream((err) => {
      clearTimeout(timer);
      client.close();
      resolve({ code: err ? err.code : null, details: err?.details ?? '' });
    });
    call.on('error', () => undefined);
    for (const f of frames) {
      call.write({
        from: f.from,
        to: f.to,
        clusterId: f.clusterId,
        fromUid: f.fromUid,
        messages: f.messages.map(encodeMessage),
      });
    }
    call.end();
  });
}
