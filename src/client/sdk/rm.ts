/**
 * The RM side of the client: the registry of this process's TCC and Saga resources and the
 * dispatcher of the phase-two requests the TC sends on the RM channel.
 *
 * A phase-two answer is never ambiguous. The handler resolves → PhaseTwo_Committed /
 * PhaseTwo_Rollbacked. It throws UnretryableBranchError → *_Unretryable (the transaction
 * ends *Failed and waits for an operator). It throws anything else — a business error, a
 * database error, a fence conflict, an unknown resource, a full queue, a closing client —
 * → *_Retryable: the TC calls again with backoff, and the fence (or the action's own
 * idempotency) makes the repeat safe. Nothing is ever reported done that did not commit.
 *
 * Two deliveries of the same (kind, xid, branch) that overlap in this process share one
 * run: the second waits for the first's answer instead of racing it.
 *
 * A request for a branch of another application is refused before anything else
 * (ForeignBranchError, answered to the TC as a refusal): a resource id is unique within an
 * application only, so another team's action of the same name is not this one.
 */
import { BadRequestError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { BranchType } from '../context.ts';
import { ForeignBranchError, UnretryableBranchError } from './errors.ts';
import {
  MAX_CONCURRENT_PHASE_TWO,
  MAX_QUEUED_PHASE_TWO,
  MAX_RESOURCE_ID_CHARS,
  MAX_RESOURCES_PER_CLIENT,
  RM_READY_TIMEOUT_MS,
} from './limits.ts';
import { BranchStatus } from '../../shared/tc-vocabulary.ts';
import type { PhaseTwoAnswer, PhaseTwoRequest, RmChannelPort, TcPort } from '../tc/port.ts';

/**
 * One resource's phase two. Resolves when the branch is done (or had nothing to do); throws on
 * failure.
 */
export interface ResourceHandler {
  readonly resourceId: string;
  readonly branchType: BranchType;
  phaseTwo(request: PhaseTwoRequest): Promise<void>;
}

export interface ResourceManagerDeps {
  tc: TcPort;
  applicationId: string;
  transactionServiceGroup: string;
  clientId: string;
  logger: Logger;
  maxConcurrent?: number;
  maxQueued?: number;
}

const RESOURCE_ID = /^[\x21-\x7e]+$/;

export function validateResourceId(resourceId: unknown): string {
  if (
    typeof resourceId !== 'string' ||
    resourceId.length === 0 ||
    resourceId.length > MAX_RESOURCE_ID_CHARS ||
    !RESOURCE_ID.test(resourceId)
  ) {
    throw new BadRequestError(
      `a resource id (action name) must be 1..${MAX_RESOURCE_ID_CHARS} printable ASCII characters without spaces, got ${JSON.stringify(String(resourceId).slice(0, 80))}`,
    );
  }
  return resourceId;
}

function doneStatus(kind: PhaseTwoRequest['kind']): BranchStatus {
  return kind === 'commit' ? BranchStatus.PhaseTwo_Committed : BranchStatus.PhaseTwo_Rollbacked;
}

function failedStatus(kind: PhaseTwoRequest['kind'], retryable: boolean): BranchStatus {
  if (kind === 'commit')
    return retryable
      ? BranchStatus.PhaseTwo_CommitFailed_Retryable
      : BranchStatus.PhaseTwo_CommitFailed_Unretryable;
  return retryable
    ? BranchStatus.PhaseTwo_RollbackFailed_Retryable
    : BranchStatus.PhaseTwo_RollbackFailed_Unretryable;
}

export class ResourceManager {
  private readonly resources = new Map<string, ResourceHandler>();
  private readonly log: Logger;
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;
  private channel: RmChannelPort | null = null;
  private running = 0;
  private readonly queue: (() => void)[] = [];
  private readonly inflight = new Map<string, Promise<BranchStatus | PhaseTwoAnswer>>();
  private accepting = true;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly deps: ResourceManagerDeps) {
    this.log = deps.logger.child({ component: 'rm', clientId: deps.clientId });
    this.maxConcurrent = deps.maxConcurrent ?? MAX_CONCURRENT_PHASE_TWO;
    this.maxQueued = deps.maxQueued ?? MAX_QUEUED_PHASE_TWO;
  }

  get resourceIds(): string[] {
    return [...this.resources.keys()];
  }

  /** Adds a resource and (re)registers the RM channel so the TC routes its phase two here. */
  register(handler: ResourceHandler): void {
    validateResourceId(handler.resourceId);
    if (this.resources.has(handler.resourceId))
      throw new BadRequestError(
        `resource ${handler.resourceId} is already registered on this client`,
      );
    if (this.resources.size >= MAX_RESOURCES_PER_CLIENT)
      throw new BadRequestError(`a client serves at most ${MAX_RESOURCES_PER_CLIENT} resources`);
    this.resources.set(handler.resourceId, handler);
    if (this.channel === null) {
      this.channel = this.deps.tc.openRmChannel({
        applicationId: this.deps.applicationId,
        transactionServiceGroup: this.deps.transactionServiceGroup,
        clientId: this.deps.clientId,
        resourceIds: () => this.resourceIds,
        handler: (request) => this.answer(request),
      });
    } else {
      this.channel.resourcesChanged();
    }
    this.log.debug(
      { resourceId: handler.resourceId, branchType: handler.branchType },
      'resource registered',
    );
  }

  /**
   * Waits (bounded) until the TC knows this RM serves its resources, so the phase two of a
   * branch about to be registered reaches us at once. On timeout it only logs: the branch
   * can still be registered, and the TC retries phase two until the channel is up.
   */
  async ensureReady(timeoutMs = RM_READY_TIMEOUT_MS): Promise<void> {
    if (this.channel === null) return;
    try {
      await this.channel.ready(timeoutMs);
    } catch (err) {
      this.log.warn(
        { err, timeoutMs },
        'the RM channel is not registered yet; phase two will reach this RM once it is (the TC retries)',
      );
    }
  }

  /**
   * The RM channel's handler. Rejects only with ForeignBranchError, for a branch of another
   * application (a resource id is unique within an application only): nothing runs.
   */
  async handle(request: PhaseTwoRequest): Promise<BranchStatus> {
    const answer = await this.answer(request);
    return typeof answer === 'object' ? answer.status : answer;
  }

  /**
   * The RM channel's handler: as handle, but an unretryable failure answers with its message
   * (`{ status, message }`: the TC logs it and the console shows it).
   */
  async answer(request: PhaseTwoRequest): Promise<BranchStatus | PhaseTwoAnswer> {
    this.refuseForeign(request);
    const key = `${request.kind}|${request.xid}|${request.branchId}`;
    const same = this.inflight.get(key);
    if (same !== undefined) {
      this.log.debug(
        { xid: request.xid, branchId: request.branchId, kind: request.kind },
        'phase two delivered again while running; sharing the run',
      );
      return same;
    }
    const run = this.dispatch(request).finally(() => this.inflight.delete(key));
    this.inflight.set(key, run);
    return run;
  }

  /** Throws ForeignBranchError (logged) when the request's branch is not this application's. */
  private refuseForeign(request: PhaseTwoRequest): void {
    if (request.applicationId === this.deps.applicationId) return;
    const err = new ForeignBranchError(
      request.xid,
      request.branchId,
      request.applicationId,
      this.deps.applicationId,
      request.resourceId,
    );
    this.log.error(
      {
        xid: request.xid,
        branchId: request.branchId,
        resourceId: request.resourceId,
        kind: request.kind,
        branchApplicationId: request.applicationId,
      },
      'phase two for a branch of another application refused; nothing ran',
    );
    throw err;
  }

  private async dispatch(request: PhaseTwoRequest): Promise<BranchStatus | PhaseTwoAnswer> {
    const note: { message?: string } = {};
    const status = await this.dispatchStatus(request, note);
    return note.message === undefined ? status : { status, message: note.message };
  }

  private async dispatchStatus(
    request: PhaseTwoRequest,
    note: { message?: string },
  ): Promise<BranchStatus> {
    const fields = {
      xid: request.xid,
      branchId: request.branchId,
      resourceId: request.resourceId,
      kind: request.kind,
    };
    if (!this.accepting) {
      this.log.info(
        fields,
        'client closing: phase two refused (retryable); another RM of the resource, or this one restarted, will run it',
      );
      return failedStatus(request.kind, true);
    }
    const handler = this.resources.get(request.resourceId);
    if (handler === undefined) {
      this.log.warn(
        fields,
        'phase two for a resource this client does not serve; answered retryable',
      );
      return failedStatus(request.kind, true);
    }
    if (handler.branchType !== request.branchType) {
      this.log.error(
        { ...fields, expected: handler.branchType, got: request.branchType },
        'phase two with the wrong branch type for the resource; answered retryable',
      );
      return failedStatus(request.kind, true);
    }
    if (!(await this.acquireSlot())) {
      this.log.warn(
        { ...fields, queued: this.queue.length },
        'phase-two queue full; answered retryable',
      );
      return failedStatus(request.kind, true);
    }
    const started = performance.now();
    try {
      await handler.phaseTwo(request);
      this.log.debug({ ...fields, ms: Math.round(performance.now() - started) }, 'phase two done');
      return doneStatus(request.kind);
    } catch (err) {
      const retryable = !(err instanceof UnretryableBranchError);
      if (retryable) this.log.warn({ ...fields, err }, 'phase two failed; the TC will retry');
      else {
        this.log.error(
          { ...fields, err },
          'phase two failed unretryably; the transaction needs an operator',
        );
        note.message = String((err as Error).message ?? err);
      }
      return failedStatus(request.kind, retryable);
    } finally {
      this.releaseSlot();
    }
  }

  private acquireSlot(): Promise<boolean> {
    if (this.running < this.maxConcurrent) {
      this.running += 1;
      return Promise.resolve(true);
    }
    if (this.queue.length >= this.maxQueued) return Promise.resolve(false);
    return new Promise((resolve) => this.queue.push(() => resolve(true)));
  }

  private releaseSlot(): void {
    const next = this.queue.shift();
    if (next !== undefined) {
      next(); // the slot passes straight to the next request
      return;
    }
    this.running -= 1;
    if (this.running === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  /**
   * Stops taking phase two (new requests are answered retryable, so the TC redelivers them
   * to another RM of the resource or to this service once restarted) and waits, at most
   * `timeoutMs`, for the running ones to answer. Then closes the channel.
   */
  async close(timeoutMs: number): Promise<void> {
    this.accepting = false;
    if (this.running > 0) {
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        timer.unref();
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!drained)
        this.log.warn(
          { running: this.running },
          'phase two still running at close; the TC will redeliver it',
        );
    }
    const channel = this.channel;
    this.channel = null;
    await channel?.close();
  }
}
