// What the README's ```js examples take as given: a joined session, another participant's
// uid, and some state of the page's own.
import type { Session } from '../webrtcai.js';

declare global {
  const session: Session;
  const uid: string;
  const cursor: { x: number; y: number };
}
