# guestprep-script: test-hang
# A script that never ends (test only).
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
while ($true) { Start-Sleep -Seconds 60 }
