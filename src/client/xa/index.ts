/** XA branches (docs/sdk-xa.md): the driver-free parts; the data sources are in pg.ts, mysql.ts. */
export {
  ONE_PHASE_MIN_REMAINING_MS,
  DEFAULT_RECOVERY_INTERVAL_MS,
  type XaDataSource,
  type XaDataSourceOptions,
  type XaBranchContext,
  type XaHooks,
  type XaMetrics,
  type RecoveryReport,
} from './core.ts';
export {
  XaError,
  PreparedTransactionsDisabledError,
  XaRecoverPermissionError,
  XaIdentifierTooLongError,
  XaMisuseError,
  XaHeuristicCommitError,
  XaNotStartedError,
} from './errors.ts';
