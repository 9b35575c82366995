/** /health (open, for load balancers and `kiapi status`); the OpenAI-style model list is in src/openai. */
import type { AppContext } from '../context.js';
import type { RouteDef } from '../route-def.js';
import { HealthSchema } from '../schemas.js';

export function healthRoutes(ctx: AppContext): RouteDef[] {
  return [
    {
      method: 'get',
      path: '/health',
      public: true,
      handler: async () => ({
        status: 'ok',
        warm: ctx.state.warm,
        queue_len: ctx.queue.queueLength,
        memory: ctx.runtime.stats(),
        relay: null,
        engine: ctx.runtime.engine.describe(),
      }),
      doc: {
        summary: 'Health',
        description: 'Liveness and state: warmup done, queue length, resident models and the memory budget. Never needs auth.',
        operationId: 'health_health_get',
        responses: { '200': { description: 'Server state.', schema: HealthSchema } },
      },
    },
  ];
}
