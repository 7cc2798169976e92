# guestprep-script: move-file
# guestprep-output: json
# Moves an uploaded .partial file into place; never overwrites an existing file.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
if (Test-Path -LiteralPath ([string]$p.dest)) { throw ([string]$p.dest + ' already exists') }
Move-Item -LiteralPath ([string]$p.source) -Destination ([string]$p.dest)
Write-Result -Value ([ordered]@{ ok = $true })
