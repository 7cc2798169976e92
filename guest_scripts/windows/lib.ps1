# guestprep-library: lib
# Shared helpers prepended to every guestprep operation script and to collect.ps1 (never run alone).
# The journal (C:\ProgramData\guestprep\journal.json) records every change with its
# previous value so rollback.ps1 can restore it.
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false

$GuestprepDir = Join-Path -Path $env:ProgramData -ChildPath 'guestprep'
$JournalPath = Join-Path -Path $GuestprepDir -ChildPath 'journal.json'
$StatePath = Join-Path -Path $GuestprepDir -ChildPath 'state.json'

function Initialize-GuestprepDir {
    if (-not (Test-Path -Path $GuestprepDir)) {
        $null = New-Item -Path $GuestprepDir -ItemType Directory
        # SYSTEM and Administrators only: the journal and captures are not for users.
        $null = & icacls.exe $GuestprepDir '/inheritance:r' '/grant:r' '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F'
    }
}

function Read-JsonFile {
    param([string]$Path)
    if (-not (Test-Path -Path $Path)) { return $null }
    return ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($Path))
}

function Write-JsonFile {
    param([string]$Path, $Value)
    # Write beside, then replace: a crash never leaves half a file.
    $tmp = $Path + '.tmp'
    [System.IO.File]::WriteAllText($tmp, (ConvertTo-Json -InputObject $Value -Depth 8), (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
    Move-Item -Path $tmp -Destination $Path -Force
}

function Add-JournalEntry {
    param([string]$Operation, [string]$Kind, [string]$Target, [hashtable]$Detail)
    Initialize-GuestprepDir
    $journal = Read-JsonFile -Path $JournalPath
    $entries = @()
    if ($null -ne $journal) { $entries = @($journal.entries) }
    $entry = [ordered]@{ id = $entries.Count + 1; time = (Get-Date).ToUniversalTime().ToString('o'); operation = $Operation; kind = $Kind; target = $Target; rolled_back = $false }
    foreach ($k in $Detail.Keys) { $entry[$k] = $Detail[$k] }
    $entries += New-Object -TypeName PSObject -Property $entry
    Write-JsonFile -Path $JournalPath -Value ([ordered]@{ schema = 'guestprep.windows.journal/1'; entries = $entries })
}

function Get-RegistryValueOrNull {
    param([string]$Path, [string]$Name)
    $item = Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function Set-RegistryValueJournaled {
    param([string]$Operation, [string]$Path, [string]$Name, [int]$Value)
    $before = Get-RegistryValueOrNull -Path $Path -Name $Name
    if ($before -eq $Value) { return [ordered]@{ target = ($Path + '\' + $Name); changed = $false; value = $Value } }
    Add-JournalEntry -Operation $Operation -Kind 'registry_set' -Target ($Path + '\' + $Name) -Detail @{ path = $Path; name = $Name; before = $before; after = $Value }
    if (-not (Test-Path -Path $Path)) { $null = New-Item -Path $Path -Force }
    $null = New-ItemProperty -Path $Path -Name $Name -Value $Value -PropertyType DWord -Force
    $after = Get-RegistryValueOrNull -Path $Path -Name $Name
    if ($after -ne $Value) { throw ('read back ' + $Path + '\' + $Name + ' = ' + $after + ', expected ' + $Value) }
    return [ordered]@{ target = ($Path + '\' + $Name); changed = $true; before = $before; after = $Value }
}

function Update-GuestprepState {
    param([string]$Key, $Value)
    Initialize-GuestprepDir
    $state = Read-JsonFile -Path $StatePath
    $table = [ordered]@{}
    if ($null -ne $state) { foreach ($p in $state.PSObject.Properties) { $table[$p.Name] = $p.Value } }
    $table[$Key] = $Value
    Write-JsonFile -Path $StatePath -Value $table
}

function Get-Sha256 {
    param([string]$Path)
    if (Get-Command -Name 'Get-FileHash' -ErrorAction SilentlyContinue) {
        # -LiteralPath: the ? of an ESP volume path (\\?\Volume{...}\) is not a wildcard
        try { return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash } catch { $null = $_ }
    }
    # PowerShell 3.0 has no Get-FileHash
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $stream = [System.IO.File]::OpenRead($Path)
    try { return ([System.BitConverter]::ToString($sha.ComputeHash($stream))).Replace('-', '') } finally { $stream.Dispose() }
}

$EspGptType = '{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}'

function Get-EspPartition {
    # The EFI system partition by its GPT type (Get-Partition: Windows Server 2012 and newer).
    if (-not (Get-Command -Name 'Get-Partition' -ErrorAction SilentlyContinue)) {
        throw 'Get-Partition is not available (Windows Server 2012 or newer needed)'
    }
    $parts = @(Get-Partition | Where-Object -FilterScript { [string]$_.GptType -eq $EspGptType })
    if ($parts.Count -eq 0) { throw 'no EFI system partition found' }
    return $parts[0]
}

function Get-EspRoot {
    # The ESP's volume path (\\?\Volume{...}\): reached without ever assigning a drive letter.
    param($Partition)
    $paths = @($Partition.AccessPaths | Where-Object -FilterScript { ([string]$_).StartsWith('\\?\Volume') })
    if ($paths.Count -eq 0) { throw 'the ESP has no volume path' }
    $root = [string]$paths[0]
    if (-not $root.EndsWith('\')) { $root = $root + '\' }
    return $root
}

function Write-Result {
    param($Value)
    Write-Output (ConvertTo-Json -InputObject $Value -Depth 8 -Compress)
}
