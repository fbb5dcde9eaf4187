// @ts-check
// The SDK's entry point, what the package exports; `npm run build` bundles it into
// webrtcai.js, whose types are webrtcai.d.ts (which `npm run check` holds these modules to).
import { WebRTCaiError } from './errors.js';
import { Client } from './client.js';
import { listDevices } from './media.js';

export { WebRTCaiError };

/** Entry point. */
export const WebRTCai = {
  init(options) {
    return new Client(options);
  },
  /** The cameras, microphones and speakers there are: `{ kind, deviceId, label, groupId }`
   * with kind `camera`, `microphone` or `speaker`. Labels are empty until the page has been
   * allowed a camera or microphone. */
  devices() {
    return listDevices();
  },
};

export default WebRTCai;
