/**
 * The Hugging Face commit the engine loads each repo from. mflux pins its built-in repos by repo id
 * (`ModelRevisions.PINNED`) and, offline, needs exactly that snapshot in the cache; a repo it does
 * not pin loads `main`. So `kiapi activate` downloads this revision and readiness asks for it.
 *
 * The same table is worker data (`PINNED_REVISIONS` in worker/kiapi_worker/engine_api.py, checked
 * against the pinned mflux release by the contract test); a unit test asserts the two agree by
 * running `python3 -m kiapi_worker.pins`.
 */
export const PINNED_REVISIONS: Readonly<Record<string, string>> = {
  'Qwen/Qwen-Image-Edit-2509': 'd3968ef930e841f4c73640fb8afa3b306a78167e',
  'ideogram-ai/ideogram-4-fp8': 'ee79a7237b519f1402ceacf952f30c8a31ec5073',
};

/** The commit mflux pins for `repo` (an exact repo id), or null: the engine loads `main`. */
export function pinnedRevision(repo: string): string | null {
  return Object.hasOwn(PINNED_REVISIONS, repo) ? PINNED_REVISIONS[repo]! : null;
}
