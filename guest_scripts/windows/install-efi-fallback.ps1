# guestprep-script: install-efi-fallback
# guestprep-output: json
# The apply step of windows.efi_fallback: copy \EFI\Microsoft\Boot\bootmgfw.efi to
# \EFI\Boot\bootx64.efi under a temporary name, check the copy's SHA-256, back up and
# journal the old file, then rename. The ESP is reached through its volume path
# (\\?\Volume{...}\), so no drive letter is ever assigned. The engine verifies by
# collecting again (collect.ps1 reads the ESP).
# Parameters arrive as one JSON argument (data, never code):
# {"source_sha256": "...", "operation": "...", "run": "..."}
$ParamsJson = [string]$args[0]
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$FallbackRel = 'EFI\Boot\bootx64.efi'
$BootmgfwRel = 'EFI\Microsoft\Boot\bootmgfw.efi'
$p = ConvertFrom-Json -InputObject $ParamsJson

function Get-Sha256Lower {
    param([string]$Path)
    return ([string](Get-Sha256 -Path $Path)).ToLowerInvariant()
}

$part = Get-EspPartition
$root = Get-EspRoot -Partition $part
$source = $root + $BootmgfwRel
$target = $root + $FallbackRel
$want = ([string]$p.source_sha256).ToLowerInvariant()
$got = Get-Sha256Lower -Path $source
if ($got -ne $want) { throw ($BootmgfwRel + ' changed since the plan (sha256 ' + $got + ')') }
$dir = [System.IO.Path]::GetDirectoryName($target)
if (-not [System.IO.Directory]::Exists($dir)) { $null = [System.IO.Directory]::CreateDirectory($dir) }
$tmp = $target + '.guestprep-new'
[System.IO.File]::Copy($source, $tmp, $true)
if ((Get-Sha256Lower -Path $tmp) -ne $want) { [System.IO.File]::Delete($tmp); throw ('the copy of ' + $BootmgfwRel + ' differs from its source') }
Initialize-GuestprepDir
$detail = @{ esp = $root; path = $FallbackRel; sha256 = $want }
if ([System.IO.File]::Exists($target)) {
    $backupDir = Join-Path -Path $GuestprepDir -ChildPath ('backup\' + [string]$p.run + '\EFI\Boot')
    if (-not (Test-Path -LiteralPath $backupDir)) { $null = New-Item -Path $backupDir -ItemType Directory -Force }
    $backup = Join-Path -Path $backupDir -ChildPath 'bootx64.efi'
    [System.IO.File]::Copy($target, $backup, $true)
    $detail['backup'] = $backup
    $detail['before_sha256'] = Get-Sha256Lower -Path $backup
    Add-JournalEntry -Operation ([string]$p.operation) -Kind 'file_replace' -Target $target -Detail $detail
    [System.IO.File]::Delete($target)
} else {
    Add-JournalEntry -Operation ([string]$p.operation) -Kind 'file_write' -Target $target -Detail $detail
}
[System.IO.File]::Move($tmp, $target)
Write-Result -Value ([ordered]@{ ok = $true; target = $target; sha256 = $want; kind = $(if ($detail.ContainsKey('backup')) { 'file_replace' } else { 'file_write' }) })
