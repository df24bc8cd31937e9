// Socket.IO transport for frames: binary JPEG out, analysis back in the ack.
import { io } from "../vendor/socket.io-client/socket.io.esm.min.js";

const ACK_TIMEOUT_MS = 5000;

/** Connect to the server's Socket.IO endpoint; `onStatus` hears "connected" / "disconnected". */
export function connectFrames(onStatus) {
  const socket = io({ transports: ["websocket"], reconnectionDelayMax: 2000 });
  socket.on("connect", () => onStatus("connected"));
  socket.on("disconnect", () => onStatus("disconnected"));
  socket.on("connect_error", () => onStatus("disconnected"));
  return {
    /** Send one frame; resolves with the server's reply ({faces, ...} or {error}). */
    sendFrame(bytes) {
      return socket.timeout(ACK_TIMEOUT_MS).emitWithAck("frame", bytes);
    },
    reset() {
      if (socket.connected) socket.emit("reset");
    },
    close() {
      socket.close();
    },
    get connected() {
      return socket.connected;
    },
  };
}
