/**
 * "Watch it form": the panel beside the forms that follows the job just submitted through its
 * event stream (queue position, progress, ETA, a step preview image), offers cancel while it runs,
 * and shows the result with what to do next (download, reuse the seed, edit it).
 */
import { ApiError, fileUrl, postJson, request, watchJob, type Job, type JobEvent } from './api.js';
import { asText, asyncImage, h } from './dom.js';

export interface PanelActions {
  reuseSeed(job: Job): void;
  useAsEditInput(fileId: string): void;
  useAsInitImage(fileId: string): void;
  jobFinished(job: Job): void;
}

export class JobPanel {
  readonly el: HTMLElement;
  private readonly status = h('p', { class: 'job-status', 'aria-live': 'polite' }, 'Nothing running. Fill in a form and press its button: the image forms here.');
  private readonly bar = h('progress', { max: 1, value: 0, 'aria-label': 'Progress' });
  private readonly details = h('p', { class: 'job-details' });
  private readonly inputs = h('div', { class: 'job-inputs' });
  private readonly preview = h('img', { class: 'job-preview', alt: 'Preview of the image as it forms', hidden: true });
  private readonly result = h('div', { class: 'job-result' });
  private readonly error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  private readonly cancelButton = h('button', { type: 'button', class: 'danger', hidden: true }, 'Cancel');
  private controller: AbortController | null = null;
  private jobId: string | null = null;

  constructor(private readonly actions: PanelActions) {
    this.cancelButton.addEventListener('click', () => void this.cancel());
    this.bar.hidden = true;
    this.el = h(
      'section',
      { class: 'job-panel', 'aria-labelledby': 'job-heading' },
      h('h2', { id: 'job-heading' }, 'Current job'),
      this.status,
      this.bar,
      this.details,
      this.inputs,
      h('div', { class: 'job-images' }, this.preview, this.result),
      this.error,
      this.cancelButton,
    );
  }

  /**
   * Follows a newly submitted job; `inputs` are the file ids it was given (shown beside the
   * result). About 15 previews a job whatever its steps: each costs the engine a little work.
   */
  track(jobId: string, label: string, inputs: string[] = [], steps = 30): void {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.jobId = jobId;
    this.el.dataset.jobId = jobId;
    this.status.textContent = `${label}: queued`;
    this.el.dataset.state = 'queued';
    this.bar.hidden = false;
    this.bar.value = 0;
    this.bar.removeAttribute('value'); // indeterminate until the first progress
    this.details.textContent = '';
    this.preview.hidden = true;
    this.preview.removeAttribute('src');
    this.result.replaceChildren();
    this.error.hidden = true;
    this.cancelButton.hidden = false;
    this.cancelButton.disabled = false;
    this.inputs.replaceChildren(
      ...(inputs.length > 0
        ? [h('p', { class: 'hint' }, inputs.length === 1 ? 'Input' : `Inputs (${inputs.length})`), ...inputs.map((id, i) => asyncImage(fileUrl(id, 256), `Input image ${i + 1}`, 'thumb'))]
        : []),
    );
    this.el.scrollIntoView({ block: 'nearest' });
    watchJob(jobId, (e) => this.onEvent(label, e), controller.signal, Math.max(1, Math.floor(steps / 15))).catch((err: unknown) => {
      if (!controller.signal.aborted) this.showError(err);
    });
  }

  private onEvent(label: string, e: JobEvent): void {
    const d = e.data;
    const eta = typeof d.eta_s === 'number' ? ` · about ${formatSeconds(d.eta_s)} left` : '';
    switch (e.event) {
      case 'queued':
      case 'position': {
        const pos = d.queue_position;
        this.status.textContent = `${label}: waiting`;
        this.details.textContent = typeof pos === 'number' ? `Position ${pos} in the queue${pos === 1 ? ' (next to run)' : ''}${eta}` : `Queued${eta}`;
        this.el.dataset.state = 'queued';
        break;
      }
      case 'started':
        this.status.textContent = `${label}: running`;
        this.details.textContent = `Started${eta}`;
        this.el.dataset.state = 'running';
        break;
      case 'progress': {
        this.el.dataset.state = 'running';
        if (typeof d.progress === 'number') this.bar.value = d.progress;
        const step = typeof d.step === 'number' && typeof d.total === 'number' ? `Step ${d.step} of ${d.total}` : asText(d.label, 'working');
        this.status.textContent = `${label}: ${asText(d.label, 'running')}`;
        this.details.textContent = `${step}${eta}`;
        break;
      }
      case 'preview':
        if (typeof d.image === 'string') {
          this.preview.src = d.image;
          this.preview.hidden = false;
        }
        break;
      case 'succeeded':
      case 'failed':
      case 'canceled':
        this.finish(label, d as unknown as Job);
        break;
      default:
        break;
    }
  }

  private finish(label: string, job: Job): void {
    this.cancelButton.hidden = true;
    this.el.dataset.state = job.status;
    this.bar.value = job.status === 'succeeded' ? 1 : this.bar.value;
    if (job.status !== 'succeeded') {
      this.bar.hidden = true;
      this.status.textContent = `${label}: ${job.status}`;
      this.details.textContent = '';
      this.showError(new Error(job.status === 'canceled' ? 'The job was canceled.' : `The job failed: ${job.error ?? 'no reason given'}`));
      this.actions.jobFinished(job);
      return;
    }
    this.bar.hidden = true;
    this.preview.hidden = true;
    const fileId = job.artifacts[0];
    const seed = (job.result?.params as Record<string, unknown> | undefined)?.seed;
    this.status.textContent = `${label}: done`;
    this.details.textContent = `Seed ${asText(seed, '?')} · ${asText(job.result?.width)}×${asText(job.result?.height)}`;
    if (fileId) {
      const url = fileUrl(fileId);
      const download = h('a', { class: 'button', download: `${fileId}.${asText(job.params.format, 'png')}` }, 'Download');
      void url.then((u) => (download.href = u));
      this.result.replaceChildren(
        asyncImage(url, `Result of ${label}`, 'result-image'),
        h(
          'div',
          { class: 'actions' },
          download,
          h('button', { type: 'button', onclick: () => this.actions.reuseSeed(job) }, 'Reuse this seed'),
          h('button', { type: 'button', onclick: () => this.actions.useAsInitImage(fileId) }, 'Use for img2img'),
          h('button', { type: 'button', onclick: () => this.actions.useAsEditInput(fileId) }, 'Edit this image'),
        ),
      );
    }
    this.actions.jobFinished(job);
  }

  private async cancel(): Promise<void> {
    if (!this.jobId) return;
    this.cancelButton.disabled = true;
    try {
      await postJson<Job>(`/v1/jobs/${this.jobId}/cancel`, {});
    } catch (err) {
      // A job that finished meanwhile cannot be canceled: its terminal event tells the rest.
      if (!(err instanceof ApiError && err.status === 409)) this.showError(err);
      this.cancelButton.disabled = false;
    }
  }

  private showError(err: unknown): void {
    this.error.textContent = err instanceof Error ? err.message : String(err);
    this.error.hidden = false;
  }
}

export function formatSeconds(s: number): string {
  if (s < 1) return 'under a second';
  if (s < 90) return `${Math.round(s)} s`;
  return `${Math.round(s / 60)} min`;
}

/** Submits a generation as an async job and answers its id. */
export async function submitJob(path: string, body: Record<string, unknown>): Promise<string> {
  const res = await request(path, { method: 'POST', json: { ...body, mode: 'async' }, headers: { accept: 'application/json' } });
  const job = (await res.json()) as { job_id: string };
  return job.job_id;
}
