# guestprep-script: efi-facts
# guestprep-output: json
# The "efi" member of the Windows facts: firmware type, Secure Boot, the ESP (disk,
# partition, size, free space, volume path), the files under <ESP>\EFI with sizes and
# SHA-256, and `bcdedit /enum firmware` (the NVRAM boot entries). Read-only by default.
#
# With {"install_fallback": true, "source_sha256": "...", "operation": "...", "run": "..."}
# it is the apply step of windows.efi_fallback: copy \EFI\Microsoft\Boot\bootmgfw.efi to
# \EFI\Boot\bootx64.efi under a temporary name, check the copy's SHA-256, back up and
# journal the old file, then rename; and print the facts again. The ESP is reached through
# its volume path (\\?\Volume{...}\), so no drive letter is ever assigned.
# Parameters arrive as one JSON argument (data, never code).
$ParamsJson = [string]$args[0]
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$EspGuid = '{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}'
$FallbackRel = 'EFI\Boot\bootx64.efi'
$BootmgfwRel = 'EFI\Microsoft\Boot\bootmgfw.efi'
$unknownEfi = @{}
$p = $null
if ($ParamsJson) { $p = ConvertFrom-Json -InputObject $ParamsJson }

function Get-EspPartition {
    if (-not (Get-Command -Name 'Get-Partition' -ErrorAction SilentlyContinue)) {
        $unknownEfi['esp'] = 'Get-Partition is not available (Windows Server 2012 or newer needed)'
        return $null
    }
    try {
        $parts = @(Get-Partition | Where-Object { [string]$_.GptType -eq $EspGuid })
    } catch {
        $unknownEfi['esp'] = [string]$_.Exception.Message
        return $null
    }
    if ($parts.Count -eq 0) { $unknownEfi['esp'] = 'no EFI system partition found'; return $null }
    return $parts[0]
}

function Get-EspRoot {
    param($Partition)
    $paths = @($Partition.AccessPaths | Where-Object { ([string]$_).StartsWith('\\?\Volume') })
    if ($paths.Count -eq 0) { $unknownEfi['esp'] = 'the ESP has no volume path'; return $null }
    $root = [string]$paths[0]
    if (-not $root.EndsWith('\')) { $root = $root + '\' }
    return $root
}

function Get-FileSha256 {
    param([string]$Path)
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $stream = [System.IO.File]::OpenRead($Path)
    try { return ([System.BitConverter]::ToString($sha.ComputeHash($stream))).Replace('-', '').ToLowerInvariant() }
    finally { $stream.Dispose(); $sha.Dispose() }
}

function Get-EspFiles {
    param([string]$Root)
    $files = @()
    try {
        $all = [System.IO.Directory]::GetFiles($Root + 'EFI', '*', [System.IO.SearchOption]::AllDirectories)
    } catch {
        $unknownEfi['esp'] = 'cannot list ' + $Root + 'EFI: ' + [string]$_.Exception.Message
        return $null
    }
    foreach ($f in ($all | Select-Object -First 400)) {
        $rel = '\' + $f.Substring($Root.Length)
        $info = New-Object -TypeName System.IO.FileInfo -ArgumentList $f
        $hash = $null
        if ($rel.ToLowerInvariant().EndsWith('.efi')) {
            try { $hash = Get-FileSha256 -Path $f } catch { $unknownEfi['sha256:' + $rel] = [string]$_.Exception.Message }
        }
        $files += [ordered]@{ path = $rel; size = [int64]$info.Length; sha256 = $hash }
    }
    return , $files
}

function Get-FirmwareType {
    $t = [string]$env:firmware_type
    if ($t -eq 'UEFI') { return 'uefi' }
    if ($t -eq 'Legacy') { return 'bios' }
    # before Windows 8 there is no firmware_type: the loader of the running OS tells
    $cur = (& bcdedit.exe '/enum' '{current}' 2>$null) -join "`n"
    if ($cur -match 'winload\.efi') { return 'uefi' }
    return 'bios'
}

function Get-SecureBootState {
    if (-not (Get-Command -Name 'Confirm-SecureBootUEFI' -ErrorAction SilentlyContinue)) { return $null }
    try { return [bool](Confirm-SecureBootUEFI) } catch { $unknownEfi['secure_boot'] = [string]$_.Exception.Message; return $null }
}

function Get-FirmwareEntries {
    $global:LASTEXITCODE = 0
    $out = (& bcdedit.exe '/enum' 'firmware' 2>&1) -join "`n"
    return [ordered]@{ rc = [int]$LASTEXITCODE; out = $out; err = '' }
}

function Get-EfiFacts {
    $fw = Get-FirmwareType
    $doc = [ordered]@{ firmware = $fw; secure_boot = $null; esp = $null; files = $null; bcdedit = $null; unknown = $unknownEfi }
    if ($fw -ne 'uefi') { return $doc }
    $doc.secure_boot = Get-SecureBootState
    $part = Get-EspPartition
    if ($null -ne $part) {
        $root = Get-EspRoot -Partition $part
        if ($null -ne $root) {
            $free = $null
            # DriveInfo refuses volume paths; the storage module knows the ESP's free space
            try { $free = [int64](Get-Volume -Partition $part).SizeRemaining } catch { $unknownEfi['esp_free'] = [string]$_.Exception.Message }
            $doc.esp = [ordered]@{ disk = [int]$part.DiskNumber; partition = [int]$part.PartitionNumber; size = [int64]$part.Size; free = $free; access_path = $root }
            $doc.files = Get-EspFiles -Root $root
        }
    }
    $doc.bcdedit = Get-FirmwareEntries
    return $doc
}

function Install-Fallback {
    param($Params)
    $part = Get-EspPartition
    if ($null -eq $part) { throw ('cannot find the ESP: ' + $unknownEfi['esp']) }
    $root = Get-EspRoot -Partition $part
    if ($null -eq $root) { throw ('cannot reach the ESP: ' + $unknownEfi['esp']) }
    $source = $root + $BootmgfwRel
    $target = $root + $FallbackRel
    $want = ([string]$Params.source_sha256).ToLowerInvariant()
    $got = Get-FileSha256 -Path $source
    if ($got -ne $want) { throw ($BootmgfwRel + ' changed since the plan (sha256 ' + $got + ')') }
    $dir = [System.IO.Path]::GetDirectoryName($target)
    if (-not [System.IO.Directory]::Exists($dir)) { $null = [System.IO.Directory]::CreateDirectory($dir) }
    $tmp = $target + '.guestprep-new'
    [System.IO.File]::Copy($source, $tmp, $true)
    if ((Get-FileSha256 -Path $tmp) -ne $want) { [System.IO.File]::Delete($tmp); throw ('the copy of ' + $BootmgfwRel + ' differs from its source') }
    Initialize-GuestprepDir
    $detail = @{ esp = $root; path = $FallbackRel; sha256 = $want }
    if ([System.IO.File]::Exists($target)) {
        $backupDir = Join-Path -Path $GuestprepDir -ChildPath ('backup\' + [string]$Params.run + '\EFI\Boot')
        if (-not (Test-Path -Path $backupDir)) { $null = New-Item -Path $backupDir -ItemType Directory -Force }
        $backup = Join-Path -Path $backupDir -ChildPath 'bootx64.efi'
        [System.IO.File]::Copy($target, $backup, $true)
        $detail['backup'] = $backup
        $detail['before_sha256'] = Get-FileSha256 -Path $backup
        Add-JournalEntry -Operation ([string]$Params.operation) -Kind 'file_replace' -Target $target -Detail $detail
        [System.IO.File]::Delete($target)
    } else {
        Add-JournalEntry -Operation ([string]$Params.operation) -Kind 'file_write' -Target $target -Detail $detail
    }
    [System.IO.File]::Move($tmp, $target)
}

if ($null -ne $p -and $p.PSObject.Properties['install_fallback'] -and $p.install_fallback) {
    Install-Fallback -Params $p
}
Write-Result -Value (Get-EfiFacts)
