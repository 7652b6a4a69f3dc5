/**
 * Mutual TLS on the Raft port (docs/security.md). Every member holds the cluster's CA
 * certificate and its own certificate and key; both ends of every connection present a
 * certificate of that CA, and a node's identity is the node id its certificate names
 * (a subject alternative name URI `concord://node/<id>`, or else its common name) — never
 * what a frame says. A connection without a certificate, or with one of another CA, fails
 * its handshake; a frame whose sender is not the certificate's node is refused.
 */
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { isNodeId } from '../../shared/ids.ts';
import type { NodeId } from '../core/types.ts';

/** PEM bytes of the CA certificate, this node's certificate and its private key. */
export interface PeerTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export const NODE_IDENTITY_URI_PREFIX = 'concord://node/';

/**
 * The node id a peer certificate names: its one `concord://node/<id>` URI, or, without
 * any such URI, its common name. Null if it names none (or two).
 */
export function nodeIdOfCertificate(cert: PeerCertificate | undefined | null): NodeId | null {
  if (!cert || typeof cert !== 'object') return null;
  const san = typeof cert.subjectaltname === 'string' ? cert.subjectaltname : '';
  const ids = san
    .split(/,\s*/)
    .filter((part) => part.startsWith(`URI:${NODE_IDENTITY_URI_PREFIX}`))
    .map((part) => part.slice(4 + NODE_IDENTITY_URI_PREFIX.length));
  if (ids.length > 0) return ids.length === 1 && isNodeId(ids[0]) ? ids[0] : null;
  const cn = cert.subject?.CN;
  return isNodeId(cn) ? cn : null;
}

/** The server side: a certificate of the CA is required of every client. */
export function serverCredentials(tls: PeerTls | null): grpc.ServerCredentials {
  if (tls === null) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.ca,
    [{ cert_chain: tls.cert, private_key: tls.key }],
    true,
  );
}

/**
 * The client side: presents this node's certificate and accepts a server only if its
 * certificate (of the CA) names `expected` — or any node id when `expected` is null (a
 * node asking an address who is there). Host names are not what identifies a member.
 */
export function channelCredentials(
  tls: PeerTls | null,
  expected: NodeId | null,
): grpc.ChannelCredentials {
  if (tls === null) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, {
    checkServerIdentity: (_host, cert) => {
      const id = nodeIdOfCertificate(cert);
      if (id === null) return new Error('the peer certificate names no node id');
      if (expected !== null && id !== expected)
        return new Error(`the peer certificate names node ${id}, not ${expected}`);
      return undefined;
    },
  });
}

/**
 * Channel options with TLS: the name the TLS layer is given instead of the address's host
 * (an IP address is no TLS server name); channelCredentials checks the node id instead.
 */
export function tlsChannelOptions(tls: PeerTls | null): grpc.ChannelOptions {
  return tls === null ? {} : { 'grpc.ssl_target_name_override': 'concord-node' };
}

/** The node id of the certificate the caller presented on this call's connection, if any. */
export function callerNodeId(call: {
  getAuthContext?: () => { sslPeerCertificate?: PeerCertificate } | null;
}): NodeId | null {
  const ctx = typeof call.getAuthContext === 'function' ? call.getAuthContext() : null;
  return nodeIdOfCertificate(ctx?.sslPeerCertificate ?? null);
}
