# guestprep-script: run-argv
# guestprep-output: text
# Runs one program with arguments passed as data (JSON), never as a command line we build.
$ParamsJson = [string]$args[0]
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$params = ConvertFrom-Json -InputObject $ParamsJson
$argv = @($params.argv)
$rest = @()
if ($argv.Count -gt 1) { $rest = $argv[1..($argv.Count - 1)] }
& $argv[0] @rest
exit $LASTEXITCODE
