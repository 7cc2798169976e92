"""WS-Management over HTTP(S): auth, MS-WSMV encryption, SOAP dispatch, WinRS shells.

Only what real pywinrm/pypsrp clients send for guestprep's calls is implemented;
anything else gets a SOAP fault naming the action, so an unexpected client
request fails loudly instead of being answered wrongly.
"""

from __future__ import annotations

import base64
import http.server
import re
import socket
import ssl
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import spnego

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
ACT = {
    "create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
    "delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
    "get": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
    "command": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
    "receive": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
    "send": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send",
    "signal": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
}
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
PS_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
TIMED_OUT = 2150858793
BOUNDARY = b"--Encrypted Boundary"
SPNEGO_ENC = "application/HTTP-SPNEGO-session-encrypted"
CREDSSP_ENC = "application/HTTP-CredSSP-session-encrypted"
CREDSSP_CHUNK = 16384   # MS-WSMV 2.2.9.1.3: CredSSP messages are sealed in 16 KiB pieces
# Authorization scheme -> pyspnego acceptor protocol
SCHEMES = {"Negotiate": "negotiate", "NTLM": "negotiate", "Kerberos": "kerberos", "CredSSP": "credssp"}

for _p, _u in NS.items():
    ET.register_namespace(_p, _u)


class Fault(Exception):
    def __init__(self, code: int, message: str, subcode: str = "w:InternalError", status: int = 500):
        super().__init__(message)
        self.code, self.message, self.subcode, self.status = code, message, subcode, status


@dataclass
class Command:
    id: str
    argv: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: bool = False
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    rc: int | None = None
    hang: bool = False
    started: bool = False


@dataclass
class Shell:
    id: str
    resource_uri: str
    commands: dict[str, Command] = field(default_factory=dict)
    psrp: Any = None   # PsrpSession for PowerShell shells


@dataclass
class ServerConfig:
    users: dict[str, str]                     # user -> password (Basic; NTLM reads NTLM_USER_FILE)
    # "negotiate" (NTLM, or Kerberos when KRB5_KTNAME holds HTTP/<host>), "kerberos", "credssp", "basic"
    auth: tuple[str, ...] = ("basic", "negotiate")
    psrp_configurations: tuple[str, ...] = ("Microsoft.PowerShell",)
    no_language_configurations: tuple[str, ...] = ()   # JEA endpoints in NoLanguage mode
    fault_on_create: str | None = None        # answer Create with HTTP 500 + this WSManFault message
    drop_after_marker: str | None = None      # close the socket instead of answering this script's output
    drop_count: int = 0


class State:
    """Everything the server knows; shared by all connections."""

    def __init__(self, guest: Any, config: ServerConfig):
        self.guest = guest
        self.config = config
        self.shells: dict[str, Shell] = {}
        self.lock = threading.RLock()
        self.log: list[dict[str, Any]] = []   # what ran: for assertions
        self.requests: list[str] = []         # actions seen
        self.encrypted_bodies = 0              # MS-WSMV encrypted requests decrypted
        self.auth_schemes: list[str] = []      # Basic / Negotiate, per authenticated request
        self.auth_protocols: list[str] = []    # what the acceptor negotiated: ntlm / kerberos / credssp
        self.client_principals: list[str] = []
        self.delegated: list[str] = []         # users whose credentials CredSSP delegated to the "guest"
        self.encryption_protocols: set[str] = set()


def _fault_xml(relates_to: str, f: Fault) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:f="{NS["f"]}">'
        f'<s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>'
        f'<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body><s:Fault>'
        f'<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{f.subcode}</s:Value></s:Subcode></s:Code>'
        f'<s:Reason><s:Text xml:lang="en-US">{_esc(f.message)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault Code="{f.code}" Machine="127.0.0.1"><f:Message>{_esc(f.message)}</f:Message>'
        f'</f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>'
    ).encode("utf-8")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _envelope(action: str, relates_to: str, body: str, extra_header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}" '
        f'xmlns:x="{NS["x"]}" xmlns:p="{NS["p"]}">'
        f'<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>'
        f'<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>'
        f'<a:RelatesTo>{relates_to}</a:RelatesTo>{extra_header}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
    ).encode("utf-8")


class WsmanHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "WsmanHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.auth_ctx: Any = None
        self.authed_user: str | None = None

    # ------------------------------------------------------------------ HTTP
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.rstrip("/").lower() != "/wsman":
            return self._send(404, b"", "text/plain")
        if not self._authenticate():
            return
        ctype = self.headers.get("Content-Type", "")
        encrypted = "multipart/encrypted" in ctype or "multipart/x-multi-encrypted" in ctype
        if encrypted:
            m = re.search(r'protocol="([^"]+)"', ctype)
            self._enc_protocol = m.group(1) if m else SPNEGO_ENC
            self.server.state.encryption_protocols.add(self._enc_protocol)
            try:
                body = self._decrypt(body)
                self.server.state.encrypted_bodies += 1
            except Exception as exc:  # tampered or wrong key
                return self._send(400, f"cannot decrypt: {exc}".encode(), "text/plain")
        elif body and self.server.scheme == "http" and self.auth_ctx is not None and self.server.require_encryption:
            # Windows refuses unencrypted HTTP bodies unless AllowUnencrypted=true
            return self._send(401, b"", "text/plain")
        extra = {}
        final = getattr(self, "_final_token", None)
        if final:
            extra["WWW-Authenticate"] = final
            self._final_token = None
        if not body:
            return self._send(200, b"", "application/soap+xml;charset=UTF-8", extra)
        status, reply = self.server.dispatch(body, self)
        if reply is None:  # scripted connection drop
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if encrypted:
            payload, kind = self._encrypt(reply)
            return self._send(status, payload, f'{kind};protocol="{self._enc_protocol}";boundary="Encrypted Boundary"',
                              extra)
        self._send(status, reply, "application/soap+xml;charset=UTF-8", extra)

    def _send(self, status: int, payload: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    # ------------------------------------------------------------------ auth
    def _challenge(self) -> None:
        hdrs = []
        cfg_auth = self.server.state.config.auth
        if "negotiate" in cfg_auth:
            hdrs.append("Negotiate")
        if "kerberos" in cfg_auth:
            hdrs.append("Kerberos")
        if "credssp" in cfg_auth:
            hdrs.append("CredSSP")
        if "basic" in self.server.state.config.auth and self.server.scheme == "https":
            hdrs.append('Basic realm="WSMAN"')
        self.send_response(401)
        for h in hdrs:
            self.send_header("WWW-Authenticate", h)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authenticate(self) -> bool:
        header = self.headers.get("Authorization", "")
        cfg = self.server.state.config
        if header.startswith("Basic ") and "basic" in cfg.auth:
            if self.server.scheme != "https":
                self._challenge()   # Basic over HTTP is refused, as WinRM's default is
                return False
            try:
                user, _, pw = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except Exception:
                user, pw = "", None
            if cfg.users.get(user) == pw:
                self.authed_user = user
                return True
            self._challenge()
            return False
        m = re.match(r"(Negotiate|NTLM|Kerberos|CredSSP) (.+)", header)
        protocol = SCHEMES.get(m.group(1)) if m else None
        if m and (protocol in cfg.auth or (protocol == "kerberos" and "negotiate" in cfg.auth)):
            token = base64.b64decode(m.group(2))
            if self.auth_ctx is None or self.auth_ctx.complete:
                self.auth_ctx = spnego.server(protocol=protocol)
            try:
                out = self.auth_ctx.step(token)
            except Exception:
                self.auth_ctx = None
                self._challenge()
                return False
            if not self.auth_ctx.complete:
                self.send_response(401)
                self.send_header("WWW-Authenticate", f"{m.group(1)} {base64.b64encode(out or b'').decode()}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                # drain: the client resends the body with the next leg
                return False
            self._record_auth(protocol)
            if out:
                self._final_token = f"{m.group(1)} {base64.b64encode(out).decode()}"
            return True
        if self.auth_ctx is not None and self.auth_ctx.complete and not header:
            return True   # connection-bound NTLM session
        if self.authed_user and not header and self.server.scheme == "https":
            return False
        self._challenge()
        return False

    def _record_auth(self, protocol: str) -> None:
        ctx, state = self.auth_ctx, self.server.state
        negotiated = protocol if protocol == "credssp" else str(getattr(ctx, "negotiated_protocol", protocol))
        principal = getattr(ctx, "client_principal", None)
        if protocol == "credssp":
            # CredSSP's point: the guest receives the user's credentials (double hop)
            cred = ctx.get_extra_info("client_credential")
            principal = f"{getattr(cred, 'domain_name', '') or ''}\\{getattr(cred, 'username', '')}".lstrip("\\")
            state.delegated.append(principal)
        self.authed_user = str(principal)
        with state.lock:
            state.auth_protocols.append(negotiated)
            state.client_principals.append(str(principal))

    # ------------------------------------------------------------------ MS-WSMV encryption
    def _decrypt(self, body: bytes) -> bytes:
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        out = b""
        for i in range(0, len(parts) - 1, 2):
            header, payload = parts[i], parts[i + 1]
            expected = int(re.search(rb"Length=(\d+)", header).group(1))
            if payload.endswith(BOUNDARY + b"--\r\n"):
                payload = payload[: -len(BOUNDARY + b"--\r\n")]
            payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            sig_len = struct.unpack("<i", payload[:4])[0]
            # for CredSSP the "signature" is the TLS trailer: header + data is the whole record
            sig, data = payload[4:4 + sig_len], payload[4 + sig_len:]
            plain = self.auth_ctx.unwrap_winrm(sig, data)
            if len(plain) != expected:
                raise ValueError("length mismatch")
            out += plain
        return out

    def _encrypt(self, plain: bytes) -> tuple[bytes, str]:
        credssp = self._enc_protocol == CREDSSP_ENC
        step = CREDSSP_CHUNK if credssp else max(1, len(plain))
        chunks = [plain[i:i + step] for i in range(0, len(plain), step)] or [b""]
        out = b""
        for chunk in chunks:
            res = self.auth_ctx.wrap_winrm(chunk)
            stream = struct.pack("<i", len(res.header)) + res.header + res.data
            out += (BOUNDARY + b"\r\n\tContent-Type: " + self._enc_protocol.encode() + b"\r\n"
                    b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(chunk)).encode()
                    + b"\r\n" + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n" + stream)
        kind = "multipart/x-multi-encrypted" if len(chunks) > 1 else "multipart/encrypted"
        return out + BOUNDARY + b"--\r\n", kind


class WsmanHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: State, scheme: str, ssl_ctx: ssl.SSLContext | None = None,
                 require_encryption: bool = True):
        super().__init__(("127.0.0.1", 0), WsmanHandler)
        self.state = state
        self.scheme = scheme
        self.require_encryption = require_encryption
        if ssl_ctx is not None:
            self.socket = ssl_ctx.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    # ------------------------------------------------------------------ SOAP dispatch
    def dispatch(self, body: bytes, handler: WsmanHandler) -> tuple[int, bytes | None]:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return 400, f"bad XML: {exc}".encode()
        hdr = root.find("s:Header", NS)
        action = hdr.findtext("a:Action", default="", namespaces=NS).strip()
        msg_id = hdr.findtext("a:MessageID", default="", namespaces=NS).strip()
        uri = hdr.findtext("w:ResourceURI", default="", namespaces=NS).strip()
        shell_id = None
        for sel in hdr.iterfind("w:SelectorSet/w:Selector", NS):
            if sel.get("Name") == "ShellId":
                shell_id = (sel.text or "").strip()
        op_timeout = _duration(hdr.findtext("w:OperationTimeout", default="PT20S", namespaces=NS))
        bodyel = root.find("s:Body", NS)
        self.state.requests.append(action.rsplit("/", 1)[-1])
        try:
            if action == ACT["create"]:
                return 200, self._create(msg_id, uri, bodyel, hdr)
            shell = self.state.shells.get(shell_id or "")
            if shell is None:
                raise Fault(2150858843, f"The request for the Windows Remote Shell with ShellId {shell_id} failed "
                            "because the shell was not found on the server.", "w:InvalidSelectors", 400)
            if action == ACT["delete"]:
                with self.state.lock:
                    self.state.shells.pop(shell.id, None)
                return 200, _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", msg_id, "")
            if action == ACT["command"]:
                return 200, self._command(msg_id, shell, bodyel)
            if action == ACT["send"]:
                return 200, self._send(msg_id, shell, bodyel)
            if action == ACT["receive"]:
                return self._receive(msg_id, shell, bodyel, op_timeout)
            if action == ACT["signal"]:
                return 200, self._signal(msg_id, shell, bodyel)
            raise Fault(2150858770, f"action {action!r} is not implemented by the test server", "w:ActionNotSupported")
        except Fault as f:
            return f.status, _fault_xml(msg_id, f)
        except Exception as exc:  # a bug in the test server must show, not hang the client
            import traceback

            traceback.print_exc()
            return 500, _fault_xml(msg_id, Fault(2147500037, f"test server error: {type(exc).__name__}: {exc}"))

    def _create(self, msg_id: str, uri: str, body: ET.Element, hdr: ET.Element) -> bytes:
        cfg = self.state.config
        if cfg.fault_on_create:
            raise Fault(2147942405, cfg.fault_on_create, "w:AccessDenied")
        shell_id = str(uuid.uuid4()).upper()
        shell = Shell(shell_id, uri)
        if uri.startswith(PS_URI_PREFIX):
            from .psrp import PsrpSession

            name = uri[len(PS_URI_PREFIX):]
            if name not in cfg.psrp_configurations:
                raise Fault(2150858752, f"The WS-Management service cannot process the request. Cannot find the "
                            f"{name} session configuration in the WSMan: drive on the 127.0.0.1 computer.",
                            "w:InvalidResourceURI", 400)
            creation = body.find(".//{http://schemas.microsoft.com/powershell}creationXml")
            if creation is None:
                raise Fault(2150858770, "PowerShell shell without creationXml", "w:InvalidParameter", 400)
            shell.psrp = PsrpSession(self.state, name, base64.b64decode(creation.text or ""))
        elif uri != CMD_URI:
            raise Fault(2150858752, f"unknown resource URI {uri}", "w:InvalidResourceURI", 400)
        with self.state.lock:
            self.state.shells[shell_id] = shell
        body_xml = (
            f'<x:ResourceCreated><a:Address>http://127.0.0.1:{self.port}/wsman</a:Address><a:ReferenceParameters>'
            f'<w:ResourceURI>{uri}</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
            f'</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>'
            f'<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId><rsp:ResourceUri>{uri}</rsp:ResourceUri>'
            f'<rsp:Owner>test</rsp:Owner><rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>'
            f'<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>'
            f'<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>'
        )
        return _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", msg_id, body_xml)

    def _command(self, msg_id: str, shell: Shell, body: ET.Element) -> bytes:
        cl = body.find("rsp:CommandLine", NS)
        cmd_id = (cl.get("CommandId") if cl is not None else None) or str(uuid.uuid4()).upper()
        command = (cl.findtext("rsp:Command", default="", namespaces=NS) if cl is not None else "").strip().strip('"')
        args = [a.text or "" for a in cl.iterfind("rsp:Arguments", NS)] if cl is not None else []
        if shell.psrp is not None:
            shell.psrp.create_pipeline(cmd_id.upper(), base64.b64decode(args[0]) if args else b"")
        else:
            argv = [command] + " ".join(args).split()
            cmd = Command(cmd_id, argv)
            with self.state.lock:
                shell.commands[cmd_id] = cmd
            self._maybe_start(cmd)
        return _envelope(ACT["command"] + "Response", msg_id,
                         f"<rsp:CommandResponse><rsp:CommandId>{cmd_id}</rsp:CommandId></rsp:CommandResponse>")

    def _send(self, msg_id: str, shell: Shell, body: ET.Element) -> bytes:
        for st in body.iterfind("rsp:Send/rsp:Stream", NS):
            data = base64.b64decode(st.text or "")
            cid = st.get("CommandId")
            if shell.psrp is not None:
                shell.psrp.send(cid.upper() if cid else None, data)
                continue
            cmd = shell.commands.get(cid or "")
            if cmd is None:
                raise Fault(2150858843, f"unknown CommandId {cid}", "w:InvalidSelectors", 400)
            cmd.stdin += data
            if st.get("End", "false").lower() == "true":
                cmd.stdin_done = True
            self._maybe_start(cmd)
        return _envelope(ACT["send"] + "Response", msg_id, "<rsp:SendResponse/>")

    def _maybe_start(self, cmd: Command) -> None:
        """Run the command once it has what it needs (the bootstrap waits for its payload line)."""
        if cmd.started:
            return
        from .guest import run_winrs

        needs_stdin = "-EncodedCommand" in cmd.argv
        if needs_stdin and b"\n" not in cmd.stdin and not cmd.stdin_done:
            return
        cmd.started = True
        result = run_winrs(self.state, cmd.argv, bytes(cmd.stdin))
        if result is None:
            cmd.hang = True
            return
        cmd.stdout += result.stdout
        cmd.stderr += result.stderr
        cmd.rc = result.rc
        cmd.drop = result.drop  # type: ignore[attr-defined]

    def _receive(self, msg_id: str, shell: Shell, body: ET.Element, op_timeout: float) -> tuple[int, bytes | None]:
        desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        if shell.psrp is not None:
            frags, done, drop = shell.psrp.receive(cid.upper() if cid else None, op_timeout)
            if drop:
                return 200, None
            if frags is None:
                raise Fault(TIMED_OUT, "The WS-Management service cannot complete the operation within the time "
                            "specified in OperationTimeout.", "w:TimedOut")
            streams = "".join(f'<rsp:Stream Name="stdout"{_cid(cid)}>{base64.b64encode(f).decode()}</rsp:Stream>'
                              for f in frags)
            state = (f'<rsp:CommandState{_cid(cid)} State="{NS["rsp"]}/CommandState/Done"/>' if done and cid else "")
            return 200, _envelope(ACT["receive"] + "Response", msg_id,
                                  f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>")
        cmd = shell.commands.get(cid or "")
        if cmd is None:
            raise Fault(2150858843, f"unknown CommandId {cid}", "w:InvalidSelectors", 400)
        if cmd.rc is None:
            time.sleep(min(op_timeout, 0.5) if cmd.hang else 0)
            raise Fault(TIMED_OUT, "The WS-Management service cannot complete the operation within the time "
                        "specified in OperationTimeout.", "w:TimedOut")
        if getattr(cmd, "drop", False):
            return 200, None
        out = (f'<rsp:Stream Name="stdout" CommandId="{cid}">{base64.b64encode(bytes(cmd.stdout)).decode()}</rsp:Stream>'
               f'<rsp:Stream Name="stdout" CommandId="{cid}" End="true"></rsp:Stream>'
               f'<rsp:Stream Name="stderr" CommandId="{cid}">{base64.b64encode(bytes(cmd.stderr)).decode()}</rsp:Stream>'
               f'<rsp:Stream Name="stderr" CommandId="{cid}" End="true"></rsp:Stream>'
               f'<rsp:CommandState CommandId="{cid}" State="{NS["rsp"]}/CommandState/Done">'
               f'<rsp:ExitCode>{cmd.rc}</rsp:ExitCode></rsp:CommandState>')
        return 200, _envelope(ACT["receive"] + "Response", msg_id, f"<rsp:ReceiveResponse>{out}</rsp:ReceiveResponse>")

    def _signal(self, msg_id: str, shell: Shell, body: ET.Element) -> bytes:
        sig = body.find("rsp:Signal", NS)
        cid = sig.get("CommandId") if sig is not None else None
        code = sig.findtext("rsp:Code", default="", namespaces=NS) if sig is not None else ""
        if shell.psrp is not None:
            shell.psrp.signal(cid.upper() if cid else None, code)
        else:
            with self.state.lock:
                cmd = shell.commands.pop(cid or "", None)
            if cmd is not None and cmd.hang:
                self.state.log.append({"event": "terminated", "argv0": cmd.argv[0]})
        return _envelope(ACT["signal"] + "Response", msg_id, "<rsp:SignalResponse/>")


def _cid(cid: str | None) -> str:
    return f' CommandId="{cid}"' if cid else ""


def _duration(text: str) -> float:
    m = re.match(r"PT(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?", text.strip())
    if not m:
        return 20.0
    return float(m.group(1) or 0) * 60 + float(m.group(2) or 0)


class WsmanTestServer:
    """Starts HTTP and HTTPS listeners sharing one fake guest."""

    def __init__(self, guest: Any, config: ServerConfig, pki: Any | None = None, expired: bool = False):
        self.state = State(guest, config)
        self.http = WsmanHTTPServer(self.state, "http")
        self.https = None
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if expired:
                ctx.load_cert_chain(str(pki.expired_cert), str(pki.expired_key))
            else:
                ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
            self.https = WsmanHTTPServer(self.state, "https", ctx)
        self._threads: list[threading.Thread] = []

    def start(self) -> "WsmanTestServer":
        for srv in filter(None, (self.http, self.https)):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in filter(None, (self.http, self.https)):
            srv.shutdown()
            srv.server_close()
