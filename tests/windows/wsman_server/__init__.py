"""An in-repo WS-Management server that real pywinrm / pypsrp clients talk to.

Implements what guestprep's connectors use: HTTP and HTTPS listeners on 127.0.0.1,
Basic and NTLM (Negotiate, via pyspnego's acceptor) authentication, MS-WSMV message
encryption over HTTP, the WinRS shell operations (Create, Command, Send, Receive,
Signal, Delete) and a minimal PSRP layer (runspace pool open, pipeline create,
output/error/state messages) built on pypsrp's own serializer. Behind it a fake
Windows guest (``guest.FakeWindowsGuest``) answers guestprep's scripts, which it
identifies by their ``# guestprep-script: NAME`` marker, from representative outputs.
"""
