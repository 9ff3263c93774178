import { sessionId } from '../core/wire';
import { type HttpEvent, validate } from '../shared/http';

/** The session id of /api/v1/sessions/{id}..., validated. */
export const sessionIdFrom = (event: HttpEvent) =>
  validate(sessionId, event.pathParameters?.id ?? '', 'session id');
