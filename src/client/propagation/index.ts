/** xid propagation: the public export list (HTTP and gRPC). */
export {
  XID_HEADER,
  XID_HEADER_LOWER,
  MAX_LOGGED_HEADER_CHARS,
  xidHeaders,
  withXidHeaders,
  withXidInit,
  xidFetch,
  xidFromHeaders,
  xidMiddleware,
  wrapHttpHandler,
  xidFastifyPlugin,
} from './http.ts';
export type {
  XidServerOptions,
  NextFunction,
  XidMiddleware,
  RequestWithHeaders,
  FastifyHookDone,
  FastifyLikeRequest,
  FastifyLikeHook,
  FastifyLikeInstance,
} from './http.ts';
export { InvalidIncomingXidError, MAX_XID_VALUES } from './incoming.ts';
export type { XidCarrier } from './incoming.ts';
export {
  XID_METADATA_KEY,
  xidClientInterceptor,
  xidFromMetadata,
  withXidFromMetadata,
} from './grpc.ts';
export type { XidServerCallOptions } from './grpc.ts';
