/**
 * Per-application quotas on the TC port (docs/security.md), config `security.quotas`:
 *
 *   security:
 *     quotas:
 *       maxTransactionTimeoutMs: 600000      # a Begin asking longer is refused
 *       maxRmChannelsPerApplication: 64      # registered RM channels of one application
 *       maxInflightUnaryPerConnection: 1024  # unary calls in flight from one connection
 *       applications:                        # per-application overrides
 *         orders: { maxTransactionTimeoutMs: 120000, maxRmChannels: 16 }
 *
 * A refusal is a CapacityError (ERROR_CODE_CAPACITY: definite, nothing proposed; the caller
 * may try again later). The node-wide bound on live transactions is limits.maxLiveTransactions.
 */
import { ConfigError } from '../../shared/errors.ts';
import { MAX_TRANSACTION_TIMEOUT_MS } from '../../shared/protocol-limits.ts';
import { int, isPlainObject, noUnknownKeys, section, type Obj } from '../config/validate.ts';

export const DEFAULT_MAX_TRANSACTION_TIMEOUT_MS = 600_000;
export const DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION = 64;
export const DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION = 1_024;
/** Applications that may have overrides of their own. */
export const MAX_QUOTA_APPLICATIONS = 1_000;

export interface ApplicationQuota {
  maxTransactionTimeoutMs: number;
  maxRmChannels: number;
}

export interface QuotasConfig {
  maxTransactionTimeoutMs: number;
  maxRmChannelsPerApplication: number;
  maxInflightUnaryPerConnection: number;
  applications: Record<string, ApplicationQuota>;
}

export const DEFAULT_QUOTAS: Readonly<QuotasConfig> = Object.freeze({
  maxTransactionTimeoutMs: DEFAULT_MAX_TRANSACTION_TIMEOUT_MS,
  maxRmChannelsPerApplication: DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION,
  maxInflightUnaryPerConnection: DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION,
  applications: {},
});

/** Parses `security.quotas` (the `security` section given). */
export function parseQuotas(security: Obj): QuotasConfig {
  const q = section(security, 'quotas', 'security');
  const path = 'security.quotas';
  noUnknownKeys(
    q,
    [
      'maxTransactionTimeoutMs',
      'maxRmChannelsPerApplication',
      'maxInflightUnaryPerConnection',
      'applications',
    ],
    path,
  );
  const timeout = (o: Obj, key: string, at: string, def: number) =>
    int(o, key, at, { default: def, min: 1, max: MAX_TRANSACTION_TIMEOUT_MS });
  const channels = (o: Obj, key: string, at: string, def: number) =>
    int(o, key, at, { default: def, min: 1, max: 100_000 });
  const base = {
    maxTransactionTimeoutMs: timeout(
      q,
      'maxTransactionTimeoutMs',
      path,
      DEFAULT_MAX_TRANSACTION_TIMEOUT_MS,
    ),
    maxRmChannelsPerApplication: channels(
      q,
      'maxRmChannelsPerApplication',
      path,
      DEFAULT_MAX_RM_CHANNELS_PER_APPLICATION,
    ),
    maxInflightUnaryPerConnection: int(q, 'maxInflightUnaryPerConnection', path, {
      default: DEFAULT_MAX_INFLIGHT_UNARY_PER_CONNECTION,
      min: 1,
      max: 1_000_000,
    }),
  };
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
    noUnknownKeys(raw, ['maxTransactionTimeoutMs', 'maxRmChannels'], at);
    applications[app] = {
      maxTransactionTimeoutMs: timeout(
        raw,
        'maxTransactionTimeoutMs',
        at,
        base.maxTransactionTimeoutMs,
      ),
      maxRmChannels: channels(raw, 'maxRmChannels', at, base.maxRmChannelsPerApplication),
    };
  }
  return { ...base, applications };
}

/** The quotas of one application. */
export function quotaOf(q: QuotasConfig, app: string): ApplicationQuota {
  return (
    q.applications[app] ?? {
      maxTransactionTimeoutMs: q.maxTransactionTimeoutMs,
      maxRmChannels: q.maxRmChannelsPerApplication,
    }
  );
}
