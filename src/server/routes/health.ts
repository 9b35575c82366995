/** /health (open, for load balancers and `kiapi status`); the OpenAI-style model list is in src/openai. */
import type { ClusterNodeServices, ClusterView } from '../../cluster/cluster-node.js';
import type { AppContext } from '../context.js';
import type { RouteDef } from '../route-def.js';
import { HealthSchema } from '../schemas.js';

/** The cluster view, or what this node knows when the shared database cannot be read. */
async function clusterView(cluster: ClusterNodeServices): Promise<ClusterView & { error?: string }> {
  try {
    return await cluster.view();
  } catch (err) {
    return { node_id: cluster.settings.nodeId, queued: cluster.queue.queueLength, nodes: [], error: err instanceof Error ? err.message : String(err) };
  }
}

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
        ...(ctx.cluster ? { cluster: await clusterView(ctx.cluster) } : {}),
      }),
      doc: {
        summary: 'Health',
        description:
          'Liveness and state: warmup done, queue length, resident models and the memory budget; on a cluster node, every node of the cluster. Never needs auth, and answers 200 while this node runs even when the shared database is unreachable (the cluster view then says so).',
        operationId: 'health_health_get',
        responses: { '200': { description: 'Server state.', schema: HealthSchema } },
      },
    },
  ];
}
