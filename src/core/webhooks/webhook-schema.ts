/** The `webhook` field of the Job JSON (kiapi extension), as WebhookOutbox.viewOf makes it. */
import { Type } from 'typebox';
import { component } from '../schema.js';

const nullableNumber = (title: string, description: string) => Type.Union([Type.Number(), Type.Null()], { title, description });

export const WebhookDeliverySchema = component(
  'WebhookDelivery',
  Type.Object(
    {
      id: Type.String({
        title: 'Id',
        description: 'The `webhook-id` header of every attempt of this delivery (the same across retries: dedupe on it).',
        examples: ['msg_0123456789abcdef0123456789abcdef'],
      }),
      event: Type.Unsafe<'start' | 'completed'>({ type: 'string', enum: ['start', 'completed'], title: 'Event', description: 'The event this delivery reports.' }),
      type: Type.String({
        title: 'Type',
        description: 'The body\'s `type`: job.started, job.succeeded, job.failed or job.canceled.',
        examples: ['job.succeeded'],
      }),
      state: Type.Unsafe<'pending' | 'delivered' | 'failed'>({
        type: 'string',
        enum: ['pending', 'delivered', 'failed'],
        title: 'State',
        description: '`pending` (being tried), `delivered` (the receiver answered 2xx) or `failed` (no 2xx within KIAPI_WEBHOOK_RETRY_FOR_S).',
      }),
      attempts: Type.Integer({ minimum: 0, title: 'Attempts', description: 'Attempts that got an answer or failed so far.' }),
      last_status: Type.Union([Type.Integer(), Type.Null()], {
        title: 'Last Status',
        description: "HTTP status of the last attempt's answer; null before the first attempt or when it got none (refused, timed out).",
      }),
      last_error: Type.Union([Type.String(), Type.Null()], { title: 'Last Error', description: 'Why the last attempt failed; null when it did not.' }),
      last_attempt_at: nullableNumber('Last Attempt At', 'Unix timestamp of the last attempt.'),
      next_attempt_at: nullableNumber('Next Attempt At', 'Unix timestamp of the next attempt while pending; null once delivered or failed.'),
      delivered_at: nullableNumber('Delivered At', 'Unix timestamp of the 2xx answer; null until then.'),
    },
    { title: 'WebhookDelivery' },
  ),
);

export const JobWebhookSchema = component(
  'JobWebhook',
  Type.Object(
    {
      url: Type.String({ title: 'Url', description: 'Where the job\'s webhooks are POSTed (without any user:password).' }),
      events: Type.Array(Type.Unsafe<'start' | 'completed'>({ type: 'string', enum: ['start', 'completed'] }), {
        title: 'Events',
        description: 'The events the job asked for.',
      }),
      deliveries: Type.Array(WebhookDeliverySchema, {
        title: 'Deliveries',
        description: 'One per event that has happened, in event order.',
      }),
    },
    {
      title: 'JobWebhook',
      description:
        'kiapi extension, present only on jobs that asked for a webhook (request `webhook` or the server\'s KIAPI_WEBHOOK_URL): where it goes and how each delivery stands.',
    },
  ),
);
