# guestprep-script: put-chunk
# guestprep-output: json
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$bytes = [System.Convert]::FromBase64String([string]$p.data)
if (([string]$p.path).StartsWith($GuestprepDir, [System.StringComparison]::OrdinalIgnoreCase)) { Initialize-GuestprepDir }
$dir = Split-Path -Path $p.path -Parent
if (-not (Test-Path -Path $dir)) { $null = New-Item -Path $dir -ItemType Directory -Force }
if ([int64]$p.offset -eq 0) { $mode = [System.IO.FileMode]::Create } else { $mode = [System.IO.FileMode]::Open }
$fs = New-Object -TypeName System.IO.FileStream -ArgumentList $p.path, $mode, ([System.IO.FileAccess]::Write)
try {
    if ($fs.Length -ne [int64]$p.offset) { throw ($p.path + ': expected offset ' + $fs.Length + ', got ' + $p.offset) }
    $null = $fs.Seek(0, [System.IO.SeekOrigin]::End)
    $fs.Write($bytes, 0, $bytes.Length)
    $size = $fs.Length
} finally { $fs.Dispose() }
Write-Result -Value ([ordered]@{ ok = $true; size = $size })
