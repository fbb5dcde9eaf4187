// Type definitions for the WebRTC.ai browser SDK (webrtcai.js).

export type Source = 'webcam' | 'screen';

/** Error codes: the server's (invalid_message, no_such_feed, own_feed, subscription_state,
 * invalid_sdp, relay, not_joined, already_joined, resume_failed, unsupported_version,
 * message_too_large, nothing_to_publish) and the SDK's (invalid_credentials, invalid_target,
 * invalid_source, connection_failed, connection_lost, publish_failed). */
export class WebRTCaiError extends Error {
  readonly code: string;
}

export interface InitOptions {
  /** A WEB_ONLY API key. */
  key?: string;
  /** A JWT minted by your backend. */
  token?: string;
  /** Websocket URL; defaults to /ws on the server that serves the SDK. */
  url?: string;
}

export interface JoinOptions {
  /** Display name shown to the others. */
  name?: string;
}

export interface Participant {
  uid: string;
  name?: string | null;
}

export interface FeedInfo {
  feedId: string;
  uid: string;
  source: Source;
  kinds: Array<'audio' | 'video'>;
}

export interface PublishOptions {
  source?: Source;
  /** The <video> element (or its id) that shows the local stream (muted). Required. */
  target: HTMLVideoElement | string;
  audio?: boolean;
  video?: boolean;
}

export interface PublishedFeed {
  feedId: string;
  uid: string;
  source: Source;
  stream: MediaStream;
  unpublish(): Promise<void>;
}

export interface SessionEvents {
  'participant-joined': Participant;
  'participant-left': { uid: string };
  'feed-published': FeedInfo;
  'feed-unpublished': { feedId: string; uid: string };
  reconnecting: { attempt: number };
  reconnected: Record<string, never>;
  disconnected: { reason: string };
}

export interface Session {
  readonly sid: string;
  readonly uid: string;
  readonly participants: Map<string, Participant>;
  readonly feeds: Map<string, FeedInfo>;
  readonly pc: RTCPeerConnection;
  publish(options: PublishOptions): Promise<PublishedFeed>;
  unpublish(feedId: string): Promise<void>;
  subscribe(feedId: string, target: HTMLVideoElement | string): Promise<{ feedId: string; stream: MediaStream | null }>;
  unsubscribe(feedId: string): Promise<void>;
  leave(): Promise<void>;
  on<K extends keyof SessionEvents>(event: K, handler: (value: SessionEvents[K]) => void): () => void;
  off<K extends keyof SessionEvents>(event: K, handler: (value: SessionEvents[K]) => void): void;
}

export interface Client {
  join(sid: string, options?: JoinOptions): Promise<Session>;
}

export declare const WebRTCai: {
  init(options: InitOptions): Client;
};

export default WebRTCai;
