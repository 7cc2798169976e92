# guestprep-script: file-hash
# guestprep-output: json
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$item = Get-Item -LiteralPath ([string]$p.path)
Write-Result -Value ([ordered]@{ path = [string]$p.path; size = [int64]$item.Length; sha256 = (Get-Sha256 -Path $item.FullName) })
