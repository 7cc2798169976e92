# guestprep-script: run-argv
# guestprep-output: text
# Runs one program with arguments passed as data (JSON), never as a command line we build.
# Over PSRP there is no process exit code, so report_rc prints it as the last line.
$ParamsJson = [string]$args[0]
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$params = ConvertFrom-Json -InputObject $ParamsJson
$argv = @($params.argv)
$rest = @()
if ($argv.Count -gt 1) { $rest = $argv[1..($argv.Count - 1)] }
$global:LASTEXITCODE = 0
& $argv[0] @rest
if ($params.report_rc) { Write-Output ('guestprep-rc=' + $LASTEXITCODE) } else { exit $LASTEXITCODE }
