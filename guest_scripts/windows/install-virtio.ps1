# guestprep-script: install-virtio
# guestprep-output: json
# Stages the virtio-win drivers in the driver store from admin-provided media (SHA-256
# verified first) and records the virtio-win version read FROM the media. Staging alone does
# not make a driver boot-capable (no device -> no service key, no .sys in System32\drivers):
# set-boot-critical.ps1 runs next and does that part.
# Media: the virtio-win ISO (drivers by pnputil from <driver>\<os_dir>\<arch>\) or the drivers
# MSI virtio-win-gt-x64.msi / -x86.msi (DIFx stages the drivers; it holds no qemu-ga: that is
# install-qemu-ga.ps1). A file already on the guest (uploaded by guestprep), UNC or HTTPS.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.virtio_drivers'
# pnputil return values (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-return-values):
# 259 ERROR_NO_MORE_ITEMS = no device matched (always so on VMware): the package is staged.
$PnpSuccess = @(0, 259, 3010)
$MsiSuccess = @(0, 3010)
$RepoDir = Join-Path -Path $env:SystemRoot -ChildPath 'System32\DriverStore\FileRepository'
$DriverPackages = 'HKLM:\SYSTEM\DriverDatabase\DriverPackages'

function Get-MediaFile {
    param([string]$Media)
    Initialize-GuestprepDir
    $mediaDir = Join-Path -Path $GuestprepDir -ChildPath 'media'
    if (-not (Test-Path -Path $mediaDir)) { $null = New-Item -Path $mediaDir -ItemType Directory }
    if ($Media -notmatch '^https://') { return $Media }
    $target = Join-Path -Path $mediaDir -ChildPath ([System.IO.Path]::GetFileName(([System.Uri]$Media).AbsolutePath))
    if (-not (Test-Path -LiteralPath $target)) {
        [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.SecurityProtocolType]::Tls12
        $client = New-Object -TypeName System.Net.WebClient
        $client.DownloadFile($Media, $target + '.partial')
        Move-Item -LiteralPath ($target + '.partial') -Destination $target
    }
    return $target
}

function Get-StagedPackage {
    # The FileRepository folder (<inf>_<arch>_<hash>) whose .sys equals $SysHash, or $null.
    param([string]$Inf, [string]$Arch, [string]$Sys, [string]$SysHash)
    $prefix = $Inf.ToLowerInvariant() + '_' + $Arch.ToLowerInvariant() + '_'
    foreach ($dir in @(Get-ChildItem -LiteralPath $RepoDir -Directory -ErrorAction SilentlyContinue)) {
        if (-not $dir.Name.ToLowerInvariant().StartsWith($prefix)) { continue }
        $f = Join-Path -Path $dir.FullName -ChildPath $Sys
        if ((Test-Path -LiteralPath $f) -and ((Get-Sha256 -Path $f) -eq $SysHash)) { return $dir.Name }
    }
    return $null
}

function Get-PublishedName {
    # DriverDatabase\DriverPackages\<folder> holds the published oemNN.inf as its default value.
    param([string]$Folder)
    $v = Get-RegistryValueOrNull -Path (Join-Path -Path $DriverPackages -ChildPath $Folder) -Name '(default)'
    if ($null -eq $v) { return $null }
    return [string]$v
}

function Test-ProductInstalled {
    param([string]$ProductCode)
    foreach ($root in @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall', 'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall')) {
        if (Test-Path -LiteralPath (Join-Path -Path $root -ChildPath $ProductCode)) { return $true }
    }
    return $false
}

$media = Get-MediaFile -Media ([string]$p.media)
$hash = Get-Sha256 -Path $media
if ($hash -ne ([string]$p.sha256).ToUpper()) { throw ('SHA-256 of ' + $media + ' is ' + $hash + ', expected ' + ([string]$p.sha256).ToUpper() + ': not installing') }

$steps = @()
$version = $null
$versionSource = $null
if ([string]$p.kind -eq 'iso') {
    if (-not (Get-Command -Name 'Mount-DiskImage' -ErrorAction SilentlyContinue)) { throw 'Mount-DiskImage is not available: provide the drivers MSI (virtio-win-gt-x64.msi) instead of the ISO' }
    $img = Mount-DiskImage -ImagePath $media -PassThru
    try {
        $vol = $img | Get-Volume
        $root = [string]$vol.DriveLetter + ':\'
        # The virtio-win ISO's volume label is virtio-win-<version>: the version actually used.
        if ([string]$vol.FileSystemLabel -match '^virtio-win-([0-9][0-9.]*)$') { $version = $Matches[1]; $versionSource = 'iso volume label ' + [string]$vol.FileSystemLabel }
        foreach ($d in @($p.drivers)) {
            $dir = Join-Path -Path $root -ChildPath ([string]$d.folder)
            $inf = Join-Path -Path $dir -ChildPath ([string]$d.inf)
            $sys = Join-Path -Path $dir -ChildPath ([string]$d.sys)
            if (-not (Test-Path -LiteralPath $inf)) {
                if ($d.required) { throw ('the media has no ' + [string]$d.folder + '\' + [string]$d.inf + ': this virtio-win release has no ' + [string]$d.name + ' for this Windows version/architecture') }
                $steps += [ordered]@{ action = 'driver_absent_on_media'; driver = [string]$d.name; folder = [string]$d.folder }
                continue
            }
            $sysHash = Get-Sha256 -Path $sys
            $already = Get-StagedPackage -Inf ([string]$d.inf) -Arch ([string]$p.arch) -Sys ([string]$d.sys) -SysHash $sysHash
            if ($null -ne $already) {
                $steps += [ordered]@{ action = 'driver_already_staged'; driver = [string]$d.name; folder = $already; published_name = (Get-PublishedName -Folder $already) }
                continue
            }
            # pnputil syntax per version (learn.microsoft.com .../devtest/pnputil-command-syntax):
            # /add-driver from Windows 10 1607 / Server 2016 (build 14393); -a before.
            if ([string]$p.pnputil_syntax -eq 'add-driver') { $argv = @('/add-driver', $inf) } else { $argv = @('-a', $inf) }
            $r = Invoke-Native -FilePath 'pnputil.exe' -ArgumentList $argv
            if ($PnpSuccess -notcontains [int]$r.ExitCode) { throw ('pnputil ' + ($argv -join ' ') + ' exited ' + $r.ExitCode + ': ' + ([string]$r.StdOut + ' ' + [string]$r.StdErr).Trim()) }
            $folder = Get-StagedPackage -Inf ([string]$d.inf) -Arch ([string]$p.arch) -Sys ([string]$d.sys) -SysHash $sysHash
            if ($null -eq $folder) { throw ('pnputil exited ' + $r.ExitCode + ' but ' + [string]$d.inf + ' is not in ' + $RepoDir) }
            $published = Get-PublishedName -Folder $folder
            Add-JournalEntry -Operation $op -Kind 'driver_stage' -Target ([string]$d.inf) -Detail @{ published_name = $published; original_name = [string]$d.inf; folder = $folder; pnputil_syntax = [string]$p.pnputil_syntax }
            $steps += [ordered]@{ action = 'driver_staged'; driver = [string]$d.name; folder = $folder; published_name = $published; exit_code = [int]$r.ExitCode }
        }
    } finally {
        $null = Dismount-DiskImage -ImagePath $media
    }
} elseif ([string]$p.kind -eq 'msi') {
    $code = Get-MsiProperty -Path $media -Name 'ProductCode'
    $version = Get-MsiProperty -Path $media -Name 'ProductVersion'
    $versionSource = 'msi ProductVersion'
    if ($code -and (Test-ProductInstalled -ProductCode $code)) {
        $steps += [ordered]@{ action = 'msi_already_installed'; product_code = $code }
    } else {
        $log = Join-Path -Path $GuestprepDir -ChildPath 'virtio-win-install.log'
        # journal first: a crash mid-install still leaves the way back (msiexec /x <code>)
        Add-JournalEntry -Operation $op -Kind 'msi_install' -Target $code -Detail @{ product_code = $code; media = $media; version = $version }
        $proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/i', ('"' + $media + '"'), '/qn', '/norestart', 'ADDLOCAL=ALL', '/l*v', ('"' + $log + '"')) -Wait -PassThru
        if ($MsiSuccess -notcontains [int]$proc.ExitCode) { throw ('msiexec exited ' + $proc.ExitCode + ', see ' + $log) }
        $steps += [ordered]@{ action = 'msi_installed'; product_code = $code; exit_code = [int]$proc.ExitCode }
    }
} else { throw ('unsupported media kind ' + [string]$p.kind + ' (expected iso or msi)') }

Update-GuestprepState -Key 'virtio_win' -Value ([ordered]@{ version = $version; source = $versionSource; media = [string]$p.media; sha256 = $hash.ToLowerInvariant() })
Write-Result -Value ([ordered]@{ ok = $true; version = $version; version_source = $versionSource; steps = $steps })
