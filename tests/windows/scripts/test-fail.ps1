# guestprep-script: test-fail
# Throws a localized error (test only).
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$p = ConvertFrom-Json -InputObject ([string]$args[0])
throw ([string]$p.message)
