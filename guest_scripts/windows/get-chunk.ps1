# guestprep-script: get-chunk
# guestprep-output: json
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$fs = [System.IO.File]::OpenRead([string]$p.path)
try {
    $null = $fs.Seek([int64]$p.offset, [System.IO.SeekOrigin]::Begin)
    $buf = New-Object -TypeName byte[] -ArgumentList ([int]$p.length)
    $n = $fs.Read($buf, 0, $buf.Length)
    $size = $fs.Length
} finally { $fs.Dispose() }
Write-Result -Value ([ordered]@{ data = [System.Convert]::ToBase64String($buf, 0, $n); size = $size })
