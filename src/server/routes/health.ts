/** /health (open, for load balancers and `kiapi status`) and the OpenAI-style /v1/models list. */
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import type { CommonRoute } from '../openapi.js';
import { HealthSchema } from '../schemas.js';

export function healthRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get('/health', async () => ({
    status: 'ok',
    warm: ctx.state.warm,
    queue_len: ctx.queue.queueLength,
    memory: ctx.runtime.stats(),
    relay: null,
    engine: ctx.runtime.engine.describe(),
  }));

  // The original lists chat models here; kiapi serves no chat family, so the list is empty.
  app.get('/v1/models', async () => ({ object: 'list', data: [] }));
}

export const healthDocs: CommonRoute[] = [
  {
    method: 'get',
    path: '/health',
    summary: 'Health',
    description: 'Liveness and state: warmup done, queue length, resident models and the memory budget. Never needs auth.',
    operationId: 'health_health_get',
    public: true,
    responses: { '200': { description: 'Server state.', schema: HealthSchema } },
  },
];
