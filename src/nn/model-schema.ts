/**
 * The full validation of a model spec: its structure (model-spec.ts) and then its shapes, checked
 * by planning it (model-plan.ts, nothing allocated), so a config file with a conv after a flatten or
 * a residual block whose paths disagree fails where it is loaded, with the offending entry named.
 */
import { planSpec } from './model-plan.js';
import { type ModelSpec, ModelSpecError, modelSpecShapeFreeSchema, specPathString } from './model-spec.js';

/** The model spec: per-sample input shape ([C,H,W] for images, [features] for vectors) and layers. */
export const modelSpecSchema = modelSpecShapeFreeSchema.superRefine(
  (spec, ctx) => {
    try {
      planSpec(spec);
    } catch (e) {
      if (!(e instanceof ModelSpecError)) throw e;
      // The message already names the entry: `located` tells parseModelSpec not to prefix the path.
      ctx.addIssue({ code: 'custom', path: [...e.path], message: e.message, params: { located: true } });
    }
  },
  { when: (payload) => payload.issues.length === 0 },
); // shapes only of a spec whose structure is valid

/** Validates an unknown value as a ModelSpec, throwing ModelSpecError listing every problem. */
export function parseModelSpec(value: unknown): ModelSpec {
  const r = modelSpecSchema.safeParse(value);
  if (!r.success) {
    const lines = r.error.issues.map((i) => (i.code === 'custom' && i.params?.located === true ? i.message : `${specPathString(i.path)}: ${i.message}`));
    throw new ModelSpecError(`invalid model spec:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}
