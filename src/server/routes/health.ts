/** /health (open, for load balancers and `kiapi status`) and the OpenAI-style /v1/models list. */
import type { AppContext } from '../context.js';
import type { RouteDef } from '../route-def.js';
import { HealthSchema, ModelListSchema } from '../schemas.js';

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
    {
      method: 'get',
      path: '/v1/models',
      public: true,
      // The original lists chat models here; kiapi serves no chat family, so the list is empty.
      handler: async () => ({ object: 'list', data: [] }),
      doc: {
        summary: 'List Chat Models',
        description:
          "OpenAI-style model list of the chat domain, kept for clients of the original. kiapi serves no chat family, so `data` is always empty; each image family lists its models at `GET /v1/image/<family>/models`. Never needs auth.",
        operationId: 'list_models_v1_models_get',
        responses: { '200': { description: 'The (empty) chat model list.', schema: ModelListSchema } },
      },
    },
  ];
}
