/** GET /api/v1/health: the API and its function answer. Touches no table. */
import { httpRoute, json } from '../shared/http';

export const handler = httpRoute(async () => json(200, { ok: true, service: 'latchkey', api: 'v1' }));
