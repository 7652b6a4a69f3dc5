/**
 * Per-application quotas on the TC port (docs/security.md), config `security.quotas`:
 *
 *   security:
 *     quotas:
 *       maxTransactionTimeoutMs: 600000      # a Begin asking longer is refused
 *       maxRmChannelsPerApplication: 64      # registered RM channels of one application
 *       maxInflightUnaryPerConnection: 1024  # unary calls in flight from one connection
 *       maxLiveTransactionsPerApplication: 100000  # live global transactions of one application
 *       applications:                        # per-application overrides
 *         orders: { maxTransactionTimeoutMs: 120000, maxRmChannels: 16, maxLiveTransactions: 2000 }
 *
 * A refusal is a CapacityError (ERROR_CODE_CAPACITY: definite, nothing proposed; the caller
 * may try again later). The node-wide bounds (live transactions, branches, locked rows, bytes
 * of application data) are limits.*. The live-transaction quota is checked against the
 * leader's applied state (raft mode); by default it is the node's own limit.
 */
import { ConfigError } from '../../shared/errors.ts';
import { MAX_TRANSACTION_TIMEOUT_MS } from '../../shared/protocol-limits.ts';
import { MAX_LIVE_SESSIONS, MAX_LIVE_SESSIONS_CEILING } from '../../coordinator/limits.ts';
import { int, isPlainObject, noUnknownKeys, section, type Obj } from '../config/validate.ts';

export const DEFAULT_MAX_TRANSACTION_TIMEOUT_MS = 600_000;
export const DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION = 64;
export const DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION = 1_024;
/** Default: no quota tighter than the node's live limit; lower it where applications share. */
export const DEFAULT_MAX_LIVE_TRANSACTIONS_PER_APPLICATION = MAX_LIVE_SESSIONS;
/** Applications that may have overrides of their own. */
export const MAX_QUOTA_APPLICATIONS = 1_000;

export interface ApplicationQuota {
  maxTransactionTimeoutMs: number;
  maxRmChannels: number;
  maxLiveTransactions: number;
}

export interface QuotasConfig {
  maxTransactionTimeoutMs: number;
  maxRmChannelsPerApplication: number;
  maxInflightUnaryPerConnection: number;
  maxLiveTransactionsPerApplication: number;
  applications: Record<string, ApplicationQuota>;
}

export const DEFAULT_QUOTAS: Readonly<QuotasConfig> = Object.freeze({
  maxTransactionTimeoutMs: DEFAULT_MAX_TRANSACTION_TIMEOUT_MS,
  maxRmChannelsPerApplication: DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION,
  maxInflightUnaryPerConnection: DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION,
  maxLiveTransactionsPerApplication: DEFAULT_MAX_LIVE_TRANSACTIONS_PER_APPLICATION,
  applications: {},
});

/** Each node-wide quota: [key, default, max]; each per-application one: [key, its default]. */
const QUOTAS: ReadonlyArray<readonly [keyof Omit<QuotasConfig, 'applications'>, number, number]> = [
  ['maxTransactionTimeoutMs', DEFAULT_MAX_TRANSACTION_TIMEOUT_MS, MAX_TRANSACTION_TIMEOUT_MS],
  ['maxRmChannelsPerApplication', DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION, 100_000],
  ['maxInflightUnaryPerConnection', DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION, 1_000_000],
  [
    'maxLiveTransactionsPerApplication',
    DEFAULT_MAX_LIVE_TRANSACTIONS_PER_APPLICATION,
    MAX_LIVE_SESSIONS_CEILING,
  ],
];
const APPLICATION_QUOTAS: ReadonlyArray<
  readonly [keyof ApplicationQuota, keyof Omit<QuotasConfig, 'applications'>]
> = [
  ['maxTransactionTimeoutMs', 'maxTransactionTimeoutMs'],
  ['maxRmChannels', 'maxRmChannelsPerApplication'],
  ['maxLiveTransactions', 'maxLiveTransactionsPerApplication'],
];
const maxOf = (key: string): number => QUOTAS.find(([k]) => k === key)![2];

/** Parses `security.quotas` (the `security` section given). */
export function parseQuotas(security: Obj): QuotasConfig {
  const q = section(security, 'quotas', 'security');
  const path = 'security.quotas';
  noUnknownKeys(q, [...QUOTAS.map(([key]) => key), 'applications'], path);
  const base = {} as Omit<QuotasConfig, 'applications'>;
  for (const [key, def, max] of QUOTAS)
    base[key] = int(q, key, path, { default: def, min: 1, max });
  const apps = q.applications ?? {};
  if (!isPlainObject(apps))
    throw new ConfigError(`${path}.applications`, 'must be a mapping of application → quotas');
  const entries = Object.entries(apps);
  if (entries.length > MAX_QUOTA_APPLICATIONS)
    throw new ConfigError(`${path}.applications`, `at most ${MAX_QUOTA_APPLICATIONS} applications`);
  const applications: Record<string, ApplicationQuota> = {};
  for (const [app, raw] of entries) {
    const at = `${path}.applications.${app}`;
    if (!isPlainObject(raw)) throw new ConfigError(at, 'must be a mapping');
    noUnknownKeys(
      raw,
      APPLICATION_QUOTAS.map(([key]) => key),
      at,
    );
    const quota = {} as ApplicationQuota;
    for (const [key, from] of APPLICATION_QUOTAS)
      quota[key] = int(raw, key, at, { default: base[from], min: 1, max: maxOf(from) });
    applications[app] = quota;
  }
  return { ...base, applications };
}

/** The quotas of one application. */
export function quotaOf(q: QuotasConfig, app: string): ApplicationQuota {
  return (
    q.applications[app] ?? {
      maxTransactionTimeoutMs: q.maxTransactionTimeoutMs,
      maxRmChannels: q.maxRmChannelsPerApplication,
      maxLiveTransactions: q.maxLiveTransactionsPerApplication,
    }
  );
}
