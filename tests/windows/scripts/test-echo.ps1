# guestprep-script: test-echo
# guestprep-output: json
# Echoes its parameters back with non-Latin text (test only).
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$p = ConvertFrom-Json -InputObject ([string]$args[0])
$lines = @($input)
$stdin = $null
if ($lines.Count -gt 0) { $stdin = $lines -join "`n" }
Write-Output (ConvertTo-Json -InputObject ([ordered]@{ echo = $p; text = 'Привет, мир — こんにちは — مرحبا'; stdin = $stdin }) -Compress)
