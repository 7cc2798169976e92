# guestprep-script: set-boot-critical
# guestprep-output: json
# Makes the staged VirtIO storage drivers boot-capable while the guest still runs on VMware,
# the way virt-v2v does it offline (libguestfs/virt-v2v convert/windows_virtio.ml,
# add_guestor_to_registry): Windows creates Services\<drv> and copies <drv>.sys only when a
# device binds the driver, and no VirtIO device exists here. So, from the staged package:
#   1. <drv>.sys into %SystemRoot%\System32\drivers
#   2. the complete service key: Type=1 (kernel driver), Start=0 (boot), ErrorControl=1,
#      Group="SCSI miniport", ImagePath=System32\drivers\<drv>.sys ("Services registry tree",
#      learn.microsoft.com/windows-hardware/drivers/install/hklm-system-currentcontrolset-services-registry-tree)
#   3. the VirtIO PCI IDs mapped to the package: from Windows 8 on
#      HKLM\SYSTEM\DriverDatabase\DeviceIds\PCI\<id> -> value <oemNN.inf>; before Windows 8
#      Control\CriticalDeviceDatabase\PCI#<id> (Service, ClassGUID).
# Every change is journaled with its previous state before it is made and read back after.
# New keys are journaled as registry_key_create (rollback removes the key it created).
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.boot_critical'
$RepoDir = Join-Path -Path $env:SystemRoot -ChildPath 'System32\DriverStore\FileRepository'
$DriversDir = Join-Path -Path $env:SystemRoot -ChildPath 'System32\drivers'
$DriverPackages = 'HKLM:\SYSTEM\DriverDatabase\DriverPackages'
$DeviceIds = 'HKLM:\SYSTEM\DriverDatabase\DeviceIds'
$Cdd = 'HKLM:\SYSTEM\CurrentControlSet\Control\CriticalDeviceDatabase'
$ScsiClassGuid = '{4D36E97B-E325-11CE-BFC1-08002BE10318}'
# virt-v2v writes this REG_BINARY as the DeviceIds value (rank/flags of the match)
$DeviceIdValue = [byte[]](0x01, 0xFF, 0x00, 0x00)

function New-KeyJournaled {
    param([string]$Path)
    if (Test-Path -LiteralPath $Path) { return $false }
    Add-JournalEntry -Operation $op -Kind 'registry_key_create' -Target $Path -Detail @{ path = $Path }
    $null = New-Item -Path $Path -Force
    if (-not (Test-Path -LiteralPath $Path)) { throw ('read back: key ' + $Path + ' was not created') }
    return $true
}

function Set-TypedValueJournaled {
    # Like lib.ps1's Set-RegistryValueJournaled for any value type; the journal entry carries
    # the type so rollback can restore a non-DWORD previous value.
    param([string]$Path, [string]$Name, $Value, [string]$Type)
    $before = Get-RegistryValueOrNull -Path $Path -Name $Name
    $same = $false
    if ($null -ne $before) {
        if ($Type -eq 'Binary') { $same = (([byte[]]$before) -join ',') -eq (([byte[]]$Value) -join ',') }
        else { $same = ([string]$before) -eq ([string]$Value) }
    }
    if ($same) { return [ordered]@{ target = ($Path + '\' + $Name); changed = $false } }
    $journalBefore = $before
    if ($Type -eq 'Binary' -and $null -ne $before) { $journalBefore = (([byte[]]$before) -join ',') }
    $journalAfter = $Value
    if ($Type -eq 'Binary') { $journalAfter = (([byte[]]$Value) -join ',') }
    Add-JournalEntry -Operation $op -Kind 'registry_set' -Target ($Path + '\' + $Name) -Detail @{ path = $Path; name = $Name; before = $journalBefore; after = $journalAfter; type = $Type }
    $null = New-ItemProperty -Path $Path -Name $Name -Value $Value -PropertyType $Type -Force
    $after = Get-RegistryValueOrNull -Path $Path -Name $Name
    if ($Type -eq 'Binary') { $ok = (([byte[]]$after) -join ',') -eq (([byte[]]$Value) -join ',') } else { $ok = ([string]$after) -eq ([string]$Value) }
    if (-not $ok) { throw ('read back ' + $Path + '\' + $Name + ' = ' + $after + ', expected ' + $Value) }
    return [ordered]@{ target = ($Path + '\' + $Name); changed = $true; before = $journalBefore; after = $journalAfter }
}

function Find-StagedFolder {
    # Newest FileRepository folder <inf>_<arch>_<hash> that holds <sys>.
    param([string]$Inf, [string]$Arch, [string]$Sys)
    $prefix = $Inf.ToLowerInvariant() + '_' + $Arch.ToLowerInvariant() + '_'
    $found = @(Get-ChildItem -LiteralPath $RepoDir -Directory -ErrorAction SilentlyContinue | Where-Object -FilterScript { $_.Name.ToLowerInvariant().StartsWith($prefix) -and (Test-Path -LiteralPath (Join-Path -Path $_.FullName -ChildPath $Sys)) } | Sort-Object -Property LastWriteTimeUtc -Descending)
    if ($found.Count -eq 0) { return $null }
    return $found[0]
}

$steps = @()
foreach ($d in @($p.services)) {
    $name = [string]$d.name
    $sysName = $name + '.sys'
    $folder = Find-StagedFolder -Inf ([string]$d.inf) -Arch ([string]$p.arch) -Sys $sysName
    if ($null -eq $folder) { throw ([string]$d.inf + ' (' + [string]$p.arch + ') is not in the driver store (' + $RepoDir + '): windows.virtio_drivers stages it first') }
    $published = Get-RegistryValueOrNull -Path (Join-Path -Path $DriverPackages -ChildPath $folder.Name) -Name '(default)'
    if ([string]$p.mapping -eq 'driver_database' -and -not $published) { throw ('DriverDatabase\DriverPackages\' + $folder.Name + ' names no published inf (oemNN.inf)') }

    # 1. the driver file, from the staged package (the file that was verified and signed with it)
    $src = Join-Path -Path $folder.FullName -ChildPath $sysName
    $dst = Join-Path -Path $DriversDir -ChildPath $sysName
    $srcHash = Get-Sha256 -Path $src
    if (-not (Test-Path -LiteralPath $dst)) {
        Add-JournalEntry -Operation $op -Kind 'file_write' -Target $dst -Detail @{ before = $null; sha256 = $srcHash }
        Copy-Item -LiteralPath $src -Destination $dst
        $steps += [ordered]@{ target = $dst; changed = $true; sha256 = $srcHash }
    } elseif ((Get-Sha256 -Path $dst) -ne $srcHash) {
        Initialize-GuestprepDir
        $backupDir = Join-Path -Path $GuestprepDir -ChildPath 'backup'
        if (-not (Test-Path -LiteralPath $backupDir)) { $null = New-Item -Path $backupDir -ItemType Directory }
        $backup = Join-Path -Path $backupDir -ChildPath ($sysName + '.' + (Get-Date).ToUniversalTime().ToString('yyyyMMddHHmmss'))
        Copy-Item -LiteralPath $dst -Destination $backup
        Add-JournalEntry -Operation $op -Kind 'file_replace' -Target $dst -Detail @{ backup = $backup; before_sha256 = (Get-Sha256 -Path $dst); sha256 = $srcHash }
        Copy-Item -LiteralPath $src -Destination $dst -Force
        $steps += [ordered]@{ target = $dst; changed = $true; sha256 = $srcHash; backup = $backup }
    }
    if ((Get-Sha256 -Path $dst) -ne $srcHash) { throw ('read back ' + $dst + ': SHA-256 differs from the staged ' + $src) }

    # 2. the complete service key
    $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $name
    $null = New-KeyJournaled -Path $key
    $steps += Set-RegistryValueJournaled -Operation $op -Path $key -Name 'Type' -Value 1
    $steps += Set-RegistryValueJournaled -Operation $op -Path $key -Name 'Start' -Value 0
    $steps += Set-RegistryValueJournaled -Operation $op -Path $key -Name 'ErrorControl' -Value 1
    if ([string](Get-RegistryValueOrNull -Path $key -Name 'Group') -ne 'SCSI miniport') {
        $steps += Set-TypedValueJournaled -Path $key -Name 'Group' -Value 'SCSI miniport' -Type 'String'
    }
    # a PnP install writes \SystemRoot\System32\drivers\<drv>.sys; both name the same file
    $image = [string](Get-RegistryValueOrNull -Path $key -Name 'ImagePath')
    if (@(('System32\drivers\' + $sysName), ('\SystemRoot\System32\drivers\' + $sysName)) -notcontains $image) {
        $steps += Set-TypedValueJournaled -Path $key -Name 'ImagePath' -Value ('System32\drivers\' + $sysName) -Type 'ExpandString'
    }

    # 3. the PCI IDs -> this package
    foreach ($id in @($d.hardware_ids)) {
        $rest = ([string]$id).Substring(4)   # after 'PCI\'
        if ([string]$p.mapping -eq 'driver_database') {
            $null = New-KeyJournaled -Path ($DeviceIds + '\PCI')
            $idKey = $DeviceIds + '\PCI\' + $rest
            $null = New-KeyJournaled -Path $idKey
            $steps += Set-TypedValueJournaled -Path $idKey -Name ([string]$published) -Value $DeviceIdValue -Type 'Binary'
        } else {
            $idKey = $Cdd + '\PCI#' + $rest
            $null = New-KeyJournaled -Path $idKey
            $steps += Set-TypedValueJournaled -Path $idKey -Name 'Service' -Value $name -Type 'String'
            $steps += Set-TypedValueJournaled -Path $idKey -Name 'ClassGUID' -Value $ScsiClassGuid -Type 'String'
        }
    }
}
Write-Result -Value ([ordered]@{ ok = $true; steps = @($steps | Where-Object -FilterScript { $_.changed }) })
