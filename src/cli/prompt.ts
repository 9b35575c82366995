/**
 * Questions on a terminal (node:readline): yes/no, and a numbered checkbox list. Commands ask only
 * when both stdin and stdout are a TTY; without one they need flags (and say which).
 */
import { createInterface } from 'node:readline/promises';

export function isInteractive(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY);
}

/** Thrown when the user presses Ctrl-C at a prompt. */
export class PromptCanceled extends Error {
  constructor() {
    super('canceled');
    this.name = 'PromptCanceled';
  }
}

async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  const canceled = new Promise<never>((_, reject) => rl.once('SIGINT', () => reject(new PromptCanceled())));
  try {
    return (await Promise.race([rl.question(question), canceled])).trim();
  } finally {
    rl.close();
  }
}

export async function confirm(question: string, defaultYes: boolean): Promise<boolean> {
  const answer = (await ask(`${question} ${defaultYes ? '[Y/n]' : '[y/N]'} `)).toLowerCase();
  if (answer === '') return defaultYes;
  return answer === 'y' || answer === 'yes';
}

export interface Choice {
  label: string;
  detail?: string;
}

/** Parses `1 3`, `1,3`, `2-4`; numbers are 1-based. Unknown tokens are returned as errors. */
export function parseToggles(text: string, count: number): { picks: number[]; bad: string[] } {
  const picks: number[] = [];
  const bad: string[] = [];
  for (const token of text.split(/[\s,]+/).filter(Boolean)) {
    const range = /^(\d+)-(\d+)$/.exec(token);
    const [from, to] = range ? [Number(range[1]), Number(range[2])] : [Number(token), Number(token)];
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to > count || from > to) {
      bad.push(token);
      continue;
    }
    for (let i = from; i <= to; i++) picks.push(i - 1);
  }
  return { picks, bad };
}

/**
 * A checkbox list: type numbers to toggle them (`1 3`, `2-4`), `a` for all, `n` for none, and an
 * empty line to confirm. Returns the chosen indexes (maybe none).
 */
export async function chooseMany(title: string, choices: Choice[], initial: number[] = []): Promise<number[]> {
  const chosen = new Set(initial);
  for (;;) {
    console.log(title);
    choices.forEach((c, i) => {
      console.log(`  ${String(i + 1).padStart(2)}) [${chosen.has(i) ? 'x' : ' '}] ${c.label}${c.detail ? `  ${c.detail}` : ''}`);
    });
    const answer = (await ask('Toggle numbers (e.g. 1 3), a = all, n = none, Enter = done: ')).toLowerCase();
    if (answer === '') return [...chosen].sort((a, b) => a - b);
    if (answer === 'a') choices.forEach((_, i) => chosen.add(i));
    else if (answer === 'n') chosen.clear();
    else {
      const { picks, bad } = parseToggles(answer, choices.length);
      if (bad.length > 0) console.log(`  not a number from 1 to ${choices.length}: ${bad.join(', ')}`);
      for (const i of picks) {
        if (chosen.has(i)) chosen.delete(i);
        else chosen.add(i);
      }
    }
  }
}
