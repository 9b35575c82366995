/**
 * The HTTP side of idempotency keys (core/jobs/idempotency.ts): reading the header, the header
 * that marks a replayed answer, and the jobs a key names, which may have been deleted since.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ConflictError, NotFoundError } from '../core/errors.js';
import { IDEMPOTENCY_HEADER, readIdempotencyKey } from '../core/jobs/idempotency.js';
import type { JobRecord } from '../core/jobs/job-store.js';
import type { AppContext } from './context.js';

/** The request's Idempotency-Key, null when it sent none; 400 when it is not a usable key. */
export function idempotencyKeyOf(req: FastifyRequest): string | null {
  return readIdempotencyKey(req.headers['idempotency-key']);
}

/** Marks an answer that replays an earlier request's job instead of making one (as Stripe and the IETF draft's users do). */
export function markReplayed(reply: FastifyReply): void {
  void reply.header('idempotent-replayed', 'true');
}

/**
 * The jobs a replayed key names. A job deleted since (DELETE /v1/jobs, KIAPI_JOB_RETENTION_S)
 * is a 409 that says so: making a new one would break the key's promise of one job.
 */
export async function replayedJobs(ctx: AppContext, key: string, jobIds: string[]): Promise<JobRecord[]> {
  return Promise.all(jobIds.map(async (id) => {
    try {
      return await ctx.jobs.get(id);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      throw Object.assign(
        new ConflictError(`job ${id}, made by the earlier request with this ${IDEMPOTENCY_HEADER}, has been deleted; send a new key to submit the request again`),
        { param: IDEMPOTENCY_HEADER, code: 'idempotency_job_deleted' },
      );
    }
  }));
}

/** The message of a failed or canceled job's error on a replay: a retry with the same key cannot change it. */
export function replayNote(key: string | null): string {
  return key === null ? '' : ` (the answer of the earlier request with this ${IDEMPOTENCY_HEADER}; send a new key to try again)`;
}
