"""The server half of MS-PSRP, just enough for guestprep's calls from pypsrp.

Supported: opening a runspace pool (SESSION_CAPABILITY, INIT_RUNSPACEPOOL ->
SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE Opened), one
pipeline per Command holding a script (+ positional arguments) and optional
pipeline input, answered with PIPELINE_OUTPUT strings, ERROR_RECORD and
PIPELINE_STATE (Completed/Failed/Stopped); Ctrl+C and terminate signals.
Not supported (refused with a failed pipeline): cmdlet pipelines without a
script, host calls, key exchange/SecureString, disconnect/reconnect, nested
pipelines. Messages are built and parsed with pypsrp's own classes and serializer.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pypsrp.complex_objects import RunspacePoolState
from pypsrp.messages import (ApplicationPrivateData, Destination, ErrorRecordMessage, Message, MessageType,
                             PipelineState, RunspacePoolStateMessage, SessionCapability)
from pypsrp.powershell import Fragment
from pypsrp.serializer import Serializer

from .guest import clixml_error, run_psrp  # noqa: F401  (clixml_error re-exported for tests)

COMPLETED, FAILED, STOPPED = 4, 5, 3
MAX_FRAGMENT = 32 * 1024


@dataclass
class RawMessage:
    message_type: int
    rpid: str
    pid: str
    xml: str

    @classmethod
    def parse(cls, data: bytes) -> "RawMessage":
        mtype = struct.unpack("<I", data[4:8])[0]
        rpid = str(uuid.UUID(bytes_le=data[8:24]))
        pid = str(uuid.UUID(bytes_le=data[24:40]))
        body = data[40:]
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]
        return cls(mtype, rpid, pid, body.decode("utf-8"))


@dataclass
class Pipeline:
    pid: str
    script: str = ""
    args: list[str] = field(default_factory=list)
    no_input: bool = True
    input: list[Any] = field(default_factory=list)
    outbox: list[bytes] = field(default_factory=list)
    done: bool = False
    hang: bool = False
    drop: bool = False


NO_LANGUAGE = ("The syntax is not supported by this runspace. This can occur if the runspace is in no-language "
               "mode.")


class PsrpSession:
    def __init__(self, state: Any, configuration: str, creation: bytes):
        self.state = state
        self.configuration = configuration
        self.serializer = Serializer()
        self._incoming: dict[int, bytes] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.pool_outbox: list[bytes] = []
        self.lock = threading.RLock()
        self._obj_id = 0
        msgs = self._defragment(creation)
        if not msgs or msgs[0].message_type != MessageType.SESSION_CAPABILITY:
            raise ValueError("creationXml does not start with SESSION_CAPABILITY")
        self.rpid = msgs[0].rpid
        self.pool_outbox += self._pack(SessionCapability("2.3", "2.0", "1.1.0.1"))
        self.pool_outbox += self._pack(ApplicationPrivateData(data={}))
        self.pool_outbox += self._pack(RunspacePoolStateMessage(state=RunspacePoolState.OPENED))

    # ------------------------------------------------------------------ parsing
    def _defragment(self, data: bytes) -> list["RawMessage"]:
        """Reassemble fragments; parse the message header ourselves (pypsrp's client-side
        classes cannot deserialize server-bound messages such as INIT_RUNSPACEPOOL)."""
        out = []
        while data:
            frag, data = Fragment.unpack(data)
            buf = self._incoming.get(frag.object_id, b"") + frag.data
            if frag.end:
                self._incoming.pop(frag.object_id, None)
                out.append(RawMessage.parse(buf))
            else:
                self._incoming[frag.object_id] = buf
        return out

    # ------------------------------------------------------------------ packing
    def _frag(self, raw: bytes) -> list[bytes]:
        self._obj_id += 1
        chunks = [raw[i:i + MAX_FRAGMENT] for i in range(0, len(raw), MAX_FRAGMENT)] or [b""]
        return [Fragment(self._obj_id, n, c, start=n == 0, end=n == len(chunks) - 1).pack()
                for n, c in enumerate(chunks)]

    def _pack(self, obj: Any, pid: str | None = None) -> list[bytes]:
        return self._frag(Message(Destination.CLIENT, self.rpid, pid, obj, self.serializer).pack())

    def _pack_output(self, text: str, pid: str) -> list[bytes]:
        body = ET.tostring(self.serializer.serialize(text), encoding="utf-8")
        raw = (struct.pack("<I", Destination.CLIENT) + struct.pack("<I", MessageType.PIPELINE_OUTPUT)
               + uuid.UUID(self.rpid).bytes_le + uuid.UUID(pid).bytes_le + body)
        return self._frag(raw)

    def _error_record(self, message: str, pid: str) -> list[bytes]:
        rec = ErrorRecordMessage()
        for attr, _meta in rec._extended_properties:
            setattr(rec, attr, None)
        rec.fq_error, rec.category, rec.reason, rec.message = "GuestprepScriptError", 0, "RuntimeException", message
        rec.invocation, rec.extended_info_present = False, False
        return self._pack(rec, pid)

    # ------------------------------------------------------------------ WinRS hooks
    def create_pipeline(self, cid: str, fragment: bytes) -> None:
        pl = Pipeline(pid=cid)
        with self.lock:
            self.pipelines[cid] = pl
        for msg in self._defragment(fragment):
            self._on_message(pl, msg)

    def send(self, cid: str | None, data: bytes) -> None:
        pl = self.pipelines.get(cid or "")
        for msg in self._defragment(data):
            if pl is None:
                continue  # pool-level messages (host responses, key exchange) are not supported
            self._on_message(pl, msg)

    def _on_message(self, pl: Pipeline, msg: "RawMessage") -> None:
        t = msg.message_type
        if t == MessageType.CREATE_PIPELINE:
            root = ET.fromstring(msg.xml)
            no_input = root.find(".//B[@N='NoInput']")
            cmds = root.find(".//Obj[@N='Cmds']/LST")
            first = cmds.find("Obj/MS") if cmds is not None else None
            is_script = first.find("B[@N='IsScript']") if first is not None else None
            if first is None or is_script is None or is_script.text != "true":
                pl.outbox += self._error_record("test server: only script pipelines are supported", pl.pid)
                pl.outbox += self._pack(PipelineState(state=FAILED), pl.pid)
                pl.done = True
                return
            if self.configuration in self.state.config.no_language_configurations:
                # a JEA RestrictedRemoteServer endpoint: scripts are refused before they run
                pl.outbox += self._error_record(NO_LANGUAGE, pl.pid)
                pl.outbox += self._pack(PipelineState(state=FAILED), pl.pid)
                pl.done = True
                return
            pl.script = self.serializer.deserialize(first.find("S[@N='Cmd']"))
            pl.args = [str(self.serializer.deserialize(v)) for v in first.findall("Obj[@N='Args']/LST/Obj/MS/*[@N='V']")]
            pl.no_input = no_input is not None and no_input.text == "true"
            if pl.no_input:
                self._execute(pl)
        elif t == MessageType.PIPELINE_INPUT:
            pl.input.append(self.serializer.deserialize(ET.fromstring(msg.xml)))
        elif t == MessageType.END_OF_PIPELINE_INPUT:
            self._execute(pl)

    def _execute(self, pl: Pipeline) -> None:
        stdin = "\n".join(str(x) for x in pl.input) if not pl.no_input else None
        res = run_psrp(self.state, pl.script, pl.args, stdin)
        if res is None:
            pl.hang = True
            return
        for line in res.stdout.decode("utf-8").splitlines():
            pl.outbox += self._pack_output(line, pl.pid)
        if res.rc != 0:
            from guestprep.connectors.windows_common import decode_clixml

            pl.outbox += self._error_record(decode_clixml(res.stderr), pl.pid)
        pl.outbox += self._pack(PipelineState(state=COMPLETED if res.rc == 0 else FAILED), pl.pid)
        pl.done = True
        pl.drop = res.drop

    def receive(self, cid: str | None, op_timeout: float) -> tuple[list[bytes] | None, bool, bool]:
        """Fragments to send, whether the command is done, whether to drop the connection."""
        if cid is None:
            with self.lock:
                out, self.pool_outbox = self.pool_outbox, []
            if out:
                return out, False, False
            time.sleep(min(op_timeout, 0.5))
            return None, False, False
        pl = self.pipelines.get(cid)
        if pl is None:
            return None, False, False
        if pl.hang:
            time.sleep(min(op_timeout, 0.5))
            return None, False, False
        if pl.drop:
            pl.drop = False
            return None, False, True
        out, pl.outbox = pl.outbox, []
        return out, pl.done, False

    def signal(self, cid: str | None, code: str) -> None:
        pl = self.pipelines.get(cid or "")
        if pl is None:
            return
        if pl.hang:
            self.state.log.append({"event": "terminated", "transport": "psrp"})
        pl.hang = False
        if not pl.done:
            pl.outbox += self._pack(PipelineState(state=STOPPED), pl.pid)
            pl.done = True
